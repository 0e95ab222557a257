"""The vision-language-action model of InternVLA-M1 (docs/methods/internvla_m1.md), built by `conf/model/vla_tiny.yaml`.

    planner (a VLM: image + instruction ⊕ spatial prompt) --hidden states of the selected layers, gradient × decay-->
    querying transformer (learnable queries; kv = [projected VLM states ; projected view features]) --Q tokens-->
    action expert (DiT over [timestep ; condition tokens ; state ; noisy action chunk]) --> ε

The planner is any image-text-to-text model of `posttrain.models.vlm` (the tiny Qwen2.5-VL by default, a real
Qwen2.5-VL directory with `model.planner.name_or_path=DIR`). The view features come from a small convolutional patch
encoder over every camera view (the paper uses DINOv2 ViT-S/14; a CNN keeps the tiny setting cheap). Actions are
diffused as normalised chunks with diffusers' DDPM schedule (training) and DDIM (sampling), with classifier-free
guidance from a learned null condition. The expert predicts ε (`prediction_type: epsilon`, the paper's) or the clean
chunk (`sample`; see docs/methods/internvla_m1.md, "Prediction target", for why the tiny setting uses it).
"""
from __future__ import annotations

import json
import os

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch import nn

from posttrain.models.builders import DTYPES, check_dtype
from posttrain.models.multimodal import forward_kwargs
from posttrain.utils.config import ConfigError, check
from posttrain.vla.normalize import unnormalize_actions

PREDICTION_TYPES = ("epsilon", "sample")  # what the expert predicts: the noise ε, or the clean chunk a
HEAD_FILE = "vla_head.safetensors"  # every weight but the planner's (which is a model directory of its own)
CONFIG_FILE = "vla_config.json"


class GradScale(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by `factor` (the paper's gradient decay: the action
    loss reaches the VLM as factor · ∇L_act, while its other losses reach it unscaled)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x if factor == 1.0 else GradScale.apply(x, factor)


class ViewEncoder(nn.Module):
    """Every camera view -> grid² patch tokens: two strided convolutions and an adaptive pool, plus learned view and
    position embeddings (the tiny stand-in for DINOv2 features)."""

    def __init__(self, width: int, views: int, grid: int = 4):
        super().__init__()
        self.grid = grid
        self.conv = nn.Sequential(nn.Conv2d(3, width // 2, 4, stride=4), nn.GELU(),
                                  nn.Conv2d(width // 2, width, 2, stride=2), nn.GELU(), nn.AdaptiveAvgPool2d(grid))
        self.view_embedding = nn.Parameter(torch.randn(views, 1, width) * 0.02)
        self.position = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, V, 3, H, W) in [0, 1] -> (B, V·grid², width)."""
        batch, views = pixels.shape[:2]
        x = self.conv(pixels.flatten(0, 1) * 2 - 1)  # (B·V, W, g, g)
        x = x.flatten(2).transpose(1, 2).unflatten(0, (batch, views))  # (B, V, g², W)
        x = x + self.position[:, None] + self.view_embedding[None, : views]  # (B, V, g², W)
        return x.flatten(1, 2)  # (B, V·g², W)


class QueryBlock(nn.Module):
    """q ← q + MHA(LN(q), kv); q ← q + MLP(LN(q))."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_padding: torch.Tensor) -> torch.Tensor:
        attended = self.attention(self.norm_q(q), kv, kv, key_padding_mask=kv_padding, need_weights=False)[0]
        q = q + attended  # (B, Q, D)
        return q + self.mlp(self.norm_mlp(q))  # (B, Q, D)


class QueryingTransformer(nn.Module):
    """Learnable queries reading, one block per selected VLM layer, [that layer's hidden states ; the view tokens],
    both projected to the query width (the view tokens first to the VLM width, as the paper projects DINO tokens)."""

    def __init__(self, vlm_width: int, view_width: int, layers: int, queries: int, width: int, heads: int,
                 dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.view_proj = nn.Linear(view_width, vlm_width)
        self.kv_proj = nn.ModuleList(nn.Linear(vlm_width, width) for _ in range(layers))
        self.blocks = nn.ModuleList(QueryBlock(width, heads, dropout) for _ in range(layers))

    def forward(self, hidden: list[torch.Tensor], attention_mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """hidden: per selected layer (B, T, H); attention_mask (B, T); views (B, N, view_width) -> (B, Q, width)."""
        views = self.view_proj(views.to(hidden[0].dtype))  # (B, N, H)
        padding = torch.cat([attention_mask == 0, attention_mask.new_zeros(views.shape[:2]).bool()], 1)  # (B, T+N)
        q = self.queries[None].expand(views.shape[0], -1, -1)  # (B, Q, D)
        for states, proj, block in zip(hidden, self.kv_proj, self.blocks):
            kv = proj(torch.cat([states, views], 1))  # (B, T+N, D)
            q = block(q, kv, padding)
        return q


class ActionExpert(nn.Module):
    """A DiT-style transformer ε_ψ(a_t, t, c) (or â_ψ, the clean chunk, under `prediction_type: sample`): the
    sequence [timestep ; condition tokens ; state ; action tokens] with learned positions (in-context conditioning),
    pre-LN encoder blocks, the output read from the action tokens."""

    def __init__(self, action_dim: int, chunk: int, condition_width: int, conditions: int, state_dim: int,
                 width: int, depth: int, heads: int):
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width)
        self.condition_proj = nn.Linear(condition_width, width)
        self.state_proj = nn.Linear(state_dim, width) if state_dim > 0 else None
        self.action_in = nn.Linear(action_dim, width)
        length = 1 + conditions + (state_dim > 0) + chunk
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.action_out = nn.LayerNorm(width), nn.Linear(width, action_dim)
        self.chunk = chunk

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                state: torch.Tensor | None) -> torch.Tensor:
        """noisy (B, H, A), timesteps (B,), condition (B, Q, C), state (B, S) or None -> ε̂ (B, H, A)."""
        dtype = self.action_in.weight.dtype
        time = self.time_embedding(self.time_proj(timesteps).to(dtype))[:, None]  # (B, 1, W)
        parts = [time, self.condition_proj(condition.to(dtype))]
        if self.state_proj is not None:
            parts.append(self.state_proj(state.to(dtype))[:, None])  # (B, 1, W)
        parts.append(self.action_in(noisy.to(dtype)))  # (B, H, W)
        x = torch.cat(parts, 1) + self.position  # (B, L, W)
        x = self.blocks(x)
        return self.action_out(self.norm(x[:, -self.chunk:])).float()  # (B, H, A)


class VLAModel(nn.Module):
    """Planner + querying transformer + action expert, with the action/state normalisation statistics of the data
    it was trained on (`set_statistics`; kept in its state dict and saved directory).

    Args (beyond the planner): see `conf/model/vla_tiny.yaml`; `query_layers` index the planner's hidden states
    (0 = embeddings, -1 = the last layer's output), one querying block each.
    """

    def __init__(self, planner: nn.Module, action_dim: int = 4, state_dim: int = 0, chunk: int = 4, views: int = 2,
                 view_width: int = 64, view_grid: int = 4, num_queries: int = 16, query_width: int = 64,
                 query_heads: int = 4, query_layers: tuple[int, ...] = (-1,), query_dropout: float = 0.1,
                 expert_width: int = 64, expert_depth: int = 2, expert_heads: int = 4, num_train_timesteps: int = 100,
                 beta_schedule: str = "squaredcos_cap_v2", sample_steps: int = 10, cfg_scale: float = 1.5,
                 condition_dropout: float = 0.1, grad_decay: float = 0.5, repeated_diffusion_steps: int = 4,
                 prediction_type: str = "epsilon"):
        super().__init__()
        text = planner.config.get_text_config()
        layers = text.num_hidden_layers
        query_layers = tuple(int(i) for i in query_layers)
        check(len(query_layers) > 0 and all(-layers - 1 <= i <= layers for i in query_layers), "model.query_layers",
              f"indices of the planner's {layers + 1} hidden states (0 = embeddings, -1 = last), got {query_layers}")
        check(0.0 <= grad_decay <= 1.0, "model.grad_decay", f"must be in [0, 1], got {grad_decay}")
        check(0.0 <= condition_dropout < 1.0, "model.condition_dropout", f"must be in [0, 1), got {condition_dropout}")
        check(action_dim > 0 and chunk > 0, "model.action_dim", f"action_dim and chunk must be > 0 "
              f"(got {action_dim}, {chunk})")
        check(repeated_diffusion_steps >= 1, "model.repeated_diffusion_steps",
              f"must be >= 1, got {repeated_diffusion_steps}")
        check(prediction_type in PREDICTION_TYPES, "model.prediction_type",
              f"one of {list(PREDICTION_TYPES)}, got {prediction_type!r}")
        self.settings = dict(action_dim=action_dim, state_dim=state_dim, chunk=chunk, views=views,
                             view_width=view_width, view_grid=view_grid, num_queries=num_queries,
                             query_width=query_width, query_heads=query_heads, query_layers=list(query_layers),
                             query_dropout=query_dropout, expert_width=expert_width, expert_depth=expert_depth,
                             expert_heads=expert_heads, num_train_timesteps=num_train_timesteps,
                             beta_schedule=beta_schedule, sample_steps=sample_steps, cfg_scale=cfg_scale,
                             condition_dropout=condition_dropout, grad_decay=grad_decay,
                             repeated_diffusion_steps=repeated_diffusion_steps, prediction_type=prediction_type)
        self.planner = planner
        self.view_encoder = ViewEncoder(view_width, views, view_grid)
        self.querying = QueryingTransformer(text.hidden_size, view_width, len(query_layers), num_queries,
                                            query_width, query_heads, query_dropout)
        self.null_condition = nn.Parameter(torch.randn(num_queries, query_width) * 0.02)
        self.expert = ActionExpert(action_dim, chunk, query_width, num_queries, state_dim, expert_width,
                                   expert_depth, expert_heads)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                             prediction_type=prediction_type, clip_sample=True)
        self.query_layers, self.grad_decay = query_layers, grad_decay
        self.condition_dropout, self.cfg_scale, self.sample_steps = condition_dropout, cfg_scale, sample_steps
        self.action_dim, self.state_dim, self.chunk, self.views = action_dim, state_dim, chunk, views
        self.repeats = repeated_diffusion_steps
        self.statistics: dict[str, list[float]] = {}

    @property
    def config(self):
        """The planner's config (what the shared VLM helpers read: image token ids, ...)."""
        return self.planner.config

    # ---- normalisation ----------------------------------------------------------------------------------------
    def set_statistics(self, statistics: dict[str, list[float]]) -> None:
        """{"action_q01", "action_q99", "state_mean", "state_std"}: each a list of per-dimension floats."""
        self.statistics = {k: [float(x) for x in v] for k, v in statistics.items()}

    def get_extra_state(self) -> dict:
        return {"statistics": self.statistics}

    def set_extra_state(self, state: dict) -> None:
        self.statistics = dict(state.get("statistics", {}))

    def _stat(self, name: str, like: torch.Tensor) -> torch.Tensor:
        check(name in self.statistics, "model", f"has no {name} statistics: train it on demonstrations first")
        return torch.tensor(self.statistics[name], dtype=torch.float32, device=like.device)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the environment's action units, by the q01/q99 range per dimension (`normalize_actions`)."""
        low, high = self._stat("action_q01", actions), self._stat("action_q99", actions)
        return unnormalize_actions(actions.float(), low, high)

    # ---- conditioning -----------------------------------------------------------------------------------------
    def planner_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs) -> list:
        """The selected layers' hidden states (B, T, H) of the planner on the prompts, each through the gradient
        decay: the action loss reaches the VLM scaled by `grad_decay` (0: not at all)."""
        inputs = forward_kwargs(self.planner, input_ids, attention_mask, image_inputs)
        out = self.planner.base_model(**inputs, output_hidden_states=True, use_cache=False)
        return [scale_gradient(out.hidden_states[i], self.grad_decay) for i in self.query_layers]

    def condition(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs,
                  views: torch.Tensor) -> torch.Tensor:
        """The querying transformer's output: (B, Q, query_width). `views` (B, V, 3, H, W) in [0, 1]."""
        hidden = self.planner_states(input_ids, attention_mask, image_inputs)
        return self.querying(hidden, attention_mask, self.view_encoder(views.to(self.null_condition.dtype)))

    def drop_condition(self, condition: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each row's condition replaced by the learned null condition with probability `condition_dropout`
        (training for classifier-free guidance)."""
        if self.condition_dropout == 0.0:
            return condition
        drop = torch.rand(condition.shape[0], generator=generator, device=condition.device) < self.condition_dropout
        return torch.where(drop[:, None, None], self.null_condition.to(condition.dtype), condition)  # (B, Q, D)

    # ---- diffusion --------------------------------------------------------------------------------------------
    def noised(self, actions: torch.Tensor, generator: torch.Generator | None = None):
        """a_t = √ᾱ_t a + √(1−ᾱ_t) ε for t ~ U{0..T−1}, ε ~ N(0, I): (a_t, t, ε), each (B, H, A) / (B,)."""
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (actions.shape[0],), generator=generator, device=actions.device)
        noise = torch.randn(actions.shape, generator=generator, device=actions.device)  # (B, H, A)
        return self.noise_scheduler.add_noise(actions.float(), noise, timesteps), timesteps, noise

    def predict_noise(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                      state: torch.Tensor | None, cfg_scale: float = 1.0) -> torch.Tensor:
        """ε̂ (B, H, A) (the clean chunk â under `prediction_type: sample`); with cfg_scale ≠ 1 the guided
        ε̂_∅ + s (ε̂_c − ε̂_∅)."""
        state = state if self.state_dim > 0 else None
        if cfg_scale == 1.0:
            return self.expert(noisy, timesteps, condition, state)
        null = self.null_condition.to(condition.dtype)[None].expand_as(condition)  # (B, Q, D)
        both = self.expert(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), torch.cat([condition, null]),
                           None if state is None else torch.cat([state, state]))  # (2B, H, A)
        conditional, unconditional = both.chunk(2)
        return unconditional + cfg_scale * (conditional - unconditional)

    def training_prediction(self, robot: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training pass of the action expert on a robot batch, each sample noised `repeats` times (rows of one
        sample consecutive): (prediction, target, action mask), (B·R, H, A), (B·R, H, A), (B·R, H); the target is
        the noise ε (`prediction_type: epsilon`) or the normalised clean chunk a (`sample`)."""
        return self.training_noisings(robot)[:3]

    def training_noisings(self, robot: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`training_prediction` and the noisings' diffusion timesteps (B·R,)."""
        repeats = self.repeats
        condition = self.condition(robot["prompt_input_ids"], robot["prompt_attention_mask"],
                                   robot.get("image_inputs"), robot["views"])  # (B, Q, D)
        condition = self.drop_condition(condition.repeat_interleave(repeats, 0))  # (B·R, Q, D)
        actions = robot["actions"].repeat_interleave(repeats, 0)  # (B·R, H, A)
        noisy, timesteps, noise = self.noised(actions)  # (B·R, H, A)
        predicted = self.predict_noise(noisy, timesteps, condition, robot["state"].repeat_interleave(repeats, 0))
        target = noise if self.noise_scheduler.config.prediction_type == "epsilon" else actions.float()
        return predicted, target, robot["action_mask"].repeat_interleave(repeats, 0), timesteps

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, state: torch.Tensor | None, generator: torch.Generator | None = None,
               steps: int | None = None, cfg_scale: float | None = None, eta: float = 0.0) -> torch.Tensor:
        """Normalised action chunks (B, H, A) by DDIM from Gaussian noise, classifier-free guided."""
        cfg_scale = self.cfg_scale if cfg_scale is None else cfg_scale
        sampler = DDIMScheduler.from_config(self.noise_scheduler.config)
        sampler.set_timesteps(steps or self.sample_steps, device=condition.device)
        x = torch.randn((condition.shape[0], self.chunk, self.action_dim), generator=generator,
                        device=condition.device)  # (B, H, A)
        for t in sampler.timesteps:
            timesteps = t.expand(x.shape[0]).to(condition.device)
            noise = self.predict_noise(x, timesteps, condition, state, cfg_scale)
            x = sampler.step(noise, t, x, eta=eta, generator=generator).prev_sample
        return x

    @torch.no_grad()
    def act(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs, views: torch.Tensor,
            state: torch.Tensor | None, generator: torch.Generator | None = None, **sampling) -> torch.Tensor:
        """Action chunks in environment units (B, H, A) for prompts, views and normalised states."""
        condition = self.condition(input_ids, attention_mask, image_inputs, views)
        return self.unnormalize_actions(self.sample(condition, state, generator, **sampling))

    # ---- saving -----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str) -> None:
        """The planner as a model directory (loadable alone), the other weights as `vla_head.safetensors` and the
        settings and statistics as `vla_config.json`."""
        os.makedirs(directory, exist_ok=True)
        self.planner.save_pretrained(directory)
        head = {k: v.detach().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("planner.") and isinstance(v, torch.Tensor)}
        save_file(head, os.path.join(directory, HEAD_FILE))
        with open(os.path.join(directory, CONFIG_FILE), "w") as handle:
            json.dump({"settings": self.settings, "statistics": self.statistics}, handle, indent=1)


def tiny_vla(planner: dict | None = None, seed: int = 0, name_or_path: str | None = None, dtype: str = "float32",
             **settings):
    """A VLAModel over the planner built by the `planner` config (its `_target_`: a VLM builder such as
    `posttrain.models.vlm.tiny_vlm`, or `vlm_from_pretrained` through `planner.name_or_path`), the other modules
    seeded by `seed`, everything in `dtype`; `name_or_path` loads a saved VLA instead. Returns (model, processor)."""
    check_dtype(dtype)
    if name_or_path:
        return load_vla(name_or_path, dtype)
    check(planner is not None and "_target_" in planner, "model.planner", "a VLM builder config with a _target_")
    planner_model, processor = instantiate(planner, dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VLAModel(planner_model, **settings)
    return model.to(DTYPES[dtype]), processor


def load_vla(directory: str, dtype: str = "float32"):
    """What `VLAModel.save_pretrained` wrote (with the processor beside it), in `dtype`."""
    from posttrain.models.vlm import vlm_from_pretrained

    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"model.name_or_path: {directory!r} is not a saved VLA (no {CONFIG_FILE})")
    with open(path) as handle:
        saved = json.load(handle)
    planner, processor = vlm_from_pretrained(directory, dtype=dtype)
    model = VLAModel(planner, **saved["settings"]).to(DTYPES[dtype])
    missing, unexpected = model.load_state_dict(load_file(os.path.join(directory, HEAD_FILE)), strict=False)
    missing = [k for k in missing if not k.startswith("planner.") and not k.endswith("_extra_state")]
    check(not missing and not unexpected, "model.name_or_path",
          f"{directory}: head weights do not match (missing {missing}, unexpected {unexpected})")
    model.set_statistics(saved.get("statistics", {}))
    return model.train(), processor
