"""The generative transfer model (the DreamTransfer role, ../shared/methods/emma.md §2.1 and §5, reconstructed at toy
scale): a conditional diffusion model from `diffusers` that re-renders both camera views of a frame with a new
appearance while keeping the frame's geometry.

    x_0 = [rgb_scene, rgb_wrist]                       (B, 6, H, W) in [-1, 1]: both views denoised together
    g   = [depth_scene, depth_wrist, onehot(seg_scene), onehot(seg_wrist)]     (B, 2 + 2·K, H, W)
    c   = Σ_a E_a[token_a]                              (B, D): one learned embedding per appearance attribute
    ε̂ or v̂ = UNet2DModel([x_t, g], t, class_labels=c)

Reconstructed choices (the paper's DiT, VAE latents, text encoder and video frames are out of reach on a CPU):
- **Views jointly**: the two views are stacked along channels, so one U-Net denoises them together and every
  convolution sees both (the spec's "tokens of all views in one sequence", at pixel level).
- **Geometry by channel concatenation** (not a ControlNet branch): each view's depth, min-max normalised per image to
  [-1, 1] (relative shape, not metric distance), and its segmentation as K one-hot channels in {-1, 1}.
- **Appearance as attribute tokens** (`posttrain.envs.appearance.ATTRIBUTES`), not free text: each attribute has its
  own embedding table; their sum enters the U-Net's time embedding (`class_embed_type="identity"`).
- DDPM training (`DDPMScheduler.add_noise`, v-prediction by default), DDIM sampling; one frame at a time (no temporal
  layers); the episode's frames of one edit share their initial noise (`engine.generate_frames`).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file
from torch import nn

from posttrain.envs.appearance import ATTRIBUTES, Appearance, attribute_index
from posttrain.envs.metaworld import SEGMENTATION_CLASSES, VIEWS
from posttrain.models.builders import DTYPES, check_dtype
from posttrain.utils.config import ConfigError, check

CONFIG_FILE = "transfer.json"
EMBEDDINGS_FILE = "attributes.safetensors"


def geometry_channels(views: int) -> int:
    """Conditioning channels: per view one depth channel and one per segmentation class."""
    return views * (1 + len(SEGMENTATION_CLASSES))


def normalise_depth(depth: torch.Tensor) -> torch.Tensor:
    """(N, H, W) metres -> [-1, 1] per image (min-max): the generator reads relative shape, not distance."""
    flat = depth.flatten(1)
    low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (depth - low) / (high - low).clamp(min=1e-6) * 2 - 1


def geometry_tensor(depth: dict[str, np.ndarray | torch.Tensor], segmentation: dict[str, np.ndarray | torch.Tensor],
                    views: tuple[str, ...] = VIEWS) -> torch.Tensor:
    """The conditioning maps of N frames: per view (N, H, W) depth and (N, H, W) class maps ->
    (N, V·(1 + K), H, W) float32: every view's depth, then every view's one-hot segmentation, in {-1, 1}."""
    depths = [normalise_depth(torch.as_tensor(np.asarray(depth[v]), dtype=torch.float32)) for v in views]
    onehots = []
    for v in views:
        classes = torch.as_tensor(np.asarray(segmentation[v]), dtype=torch.long)  # (N, H, W)
        onehot = nn.functional.one_hot(classes, len(SEGMENTATION_CLASSES)).permute(0, 3, 1, 2).float()
        onehots.append(onehot * 2 - 1)  # (N, K, H, W)
    return torch.cat([torch.stack(depths, 1), *onehots], 1)


def pixels_tensor(frames: dict[str, np.ndarray | torch.Tensor], views: tuple[str, ...] = VIEWS) -> torch.Tensor:
    """Per view (N, H, W, 3) uint8 -> (N, 3·V, H, W) float32 in [-1, 1], the views stacked along channels."""
    stacked = [torch.as_tensor(np.asarray(frames[v])).permute(0, 3, 1, 2).float() / 127.5 - 1 for v in views]
    return torch.cat(stacked, 1)


def to_frames(pixels: torch.Tensor, views: tuple[str, ...] = VIEWS) -> dict[str, np.ndarray]:
    """(N, 3·V, H, W) in [-1, 1] -> per view (N, H, W, 3) uint8."""
    images = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return {v: images[:, 3 * i: 3 * i + 3].permute(0, 2, 3, 1).numpy() for i, v in enumerate(views)}


def attribute_tokens(appearances: list[Appearance]) -> torch.Tensor:
    """(N, len(ATTRIBUTES)) int64: each attribute value's index in its vocabulary."""
    return torch.tensor([[attribute_index(name, getattr(a, name)) for name in ATTRIBUTES] for a in appearances],
                        dtype=torch.long)


class AttributeEmbedding(nn.Module):
    """Σ_a E_a[token_a]: one table per attribute, (N, A) int64 -> (N, D)."""

    def __init__(self, width: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(len(values), width) for values in ATTRIBUTES.values())
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        check(tokens.dim() == 2 and tokens.shape[1] == len(self.tables), "generator.tokens",
              f"expected (N, {len(self.tables)}) attribute tokens, got {tuple(tokens.shape)}")
        return sum(table(tokens[:, i]) for i, table in enumerate(self.tables))


class TransferModel(nn.Module):
    """ε_φ(x_t, t, g, c) over both views with its DDPM schedule and DDIM sampler (module docstring).

    Args:
        unet: a `UNet2DModel` with in_channels = 3·V + geometry_channels(V), out_channels = 3·V and an identity class
            embedding of the time-embedding width.
        views: the camera views, in channel order; image_size: H = W.
    """

    def __init__(self, unet: UNet2DModel, scheduler_config: dict, views: tuple[str, ...] = VIEWS,
                 image_size: int = 32, sample_steps: int = 10):
        super().__init__()
        self.unet, self.views, self.image_size, self.sample_steps = unet, tuple(views), int(image_size), sample_steps
        check(unet.config.in_channels == 3 * len(self.views) + geometry_channels(len(self.views)),
              "generator.views", f"the U-Net takes {unet.config.in_channels} channels, not those of views "
              f"{list(self.views)}")
        self.attributes = AttributeEmbedding(unet.config.block_out_channels[0] * 4)
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.sampler = DDIMScheduler.from_config(scheduler_config)

    @property
    def num_timesteps(self) -> int:
        return int(self.noise_scheduler.config.num_train_timesteps)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, geometry: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        """(N, 3V, H, W), (N,), (N, G, H, W), (N, A) -> the U-Net's prediction (N, 3V, H, W)."""
        check(geometry.shape[1] == geometry_channels(len(self.views)) and geometry.shape[2:] == x_t.shape[2:],
              "generator.geometry", f"expected (N, {geometry_channels(len(self.views))}, {tuple(x_t.shape[2:])}) "
              f"conditioning maps, got {tuple(geometry.shape)}")
        dtype = self.unet.dtype
        inputs = torch.cat([x_t, geometry], 1).to(dtype)  # (N, 3V + G, H, W)
        return self.unet(inputs, timesteps, class_labels=self.attributes(tokens).to(dtype)).sample.float()

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(x0, noise, timesteps)
        return x0

    @torch.no_grad()
    def sample(self, geometry: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None) -> torch.Tensor:
        """Both views (N, 3V, H, W) in [-1, 1] by DDIM (η = 0) from `noise` (default: drawn with `generator`)."""
        n, size = geometry.shape[0], self.image_size
        if noise is None:
            noise = torch.randn((n, 3 * len(self.views), size, size), generator=generator)
        sampler = DDIMScheduler.from_config(self.sampler.config)
        sampler.set_timesteps(steps or self.sample_steps)
        x = noise.to(geometry.device)
        for t in sampler.timesteps:
            predicted = self(x, t.expand(n).to(geometry.device), geometry, tokens)
            x = sampler.step(predicted, t, x).prev_sample
        return x.clamp(-1, 1)

    def save_pretrained(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.unet.save_pretrained(os.path.join(directory, "unet"))
        self.noise_scheduler.save_pretrained(os.path.join(directory, "scheduler"))
        save_file({k: v.contiguous() for k, v in self.attributes.state_dict().items()},
                  os.path.join(directory, EMBEDDINGS_FILE))
        with open(os.path.join(directory, CONFIG_FILE), "w") as handle:
            json.dump({"views": list(self.views), "image_size": self.image_size, "sample_steps": self.sample_steps,
                       "attributes": {k: list(v) for k, v in ATTRIBUTES.items()}}, handle, indent=1)


def transfer_tiny(image_size: int = 32, views=VIEWS, block_out_channels=(16, 32), layers_per_block: int = 1,
                  norm_num_groups: int = 8, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                  prediction_type: str = "v_prediction", sample_steps: int = 10, seed: int = 0,
                  name_or_path: str | None = None, dtype: str = "float32"):
    """A seeded random-init `TransferModel` (no attention: convolutions only, STACK.md's cost note), or the saved one at
    `name_or_path`, in `dtype`. Returns (model, None): it has no tokenizer."""
    check_dtype(dtype)
    if name_or_path:
        return load_transfer(name_or_path, dtype), None
    channels = tuple(int(c) for c in block_out_channels)
    check(image_size % 2 ** (len(channels) - 1) == 0, "model.image_size",
          f"{image_size} must be divisible by 2^(levels-1) = {2 ** (len(channels) - 1)}")
    check(all(c % norm_num_groups == 0 for c in channels), "model.block_out_channels",
          f"every entry must be divisible by model.norm_num_groups={norm_num_groups}")
    views = tuple(views)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(sample_size=image_size, in_channels=3 * len(views) + geometry_channels(len(views)),
                           out_channels=3 * len(views), block_out_channels=channels, layers_per_block=layers_per_block,
                           norm_num_groups=norm_num_groups, class_embed_type="identity",
                           down_block_types=("DownBlock2D",) * len(channels),
                           up_block_types=("UpBlock2D",) * len(channels))
        scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                  prediction_type=prediction_type, clip_sample=True)
        model = TransferModel(unet, scheduler.config, views, image_size, sample_steps)
    return model.to(DTYPES[dtype]), None


def load_transfer(directory: str, dtype: str = "float32") -> TransferModel:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"model.name_or_path: {directory!r} is not a saved transfer model (no {CONFIG_FILE})")
    with open(path) as handle:
        saved = json.load(handle)
    unet = UNet2DModel.from_pretrained(directory, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(directory, subfolder="scheduler")
    model = TransferModel(unet, scheduler.config, tuple(saved["views"]), saved["image_size"], saved["sample_steps"])
    check(saved.get("attributes") == {k: list(v) for k, v in ATTRIBUTES.items()}, "generator.attributes",
          f"{directory} was trained on another attribute vocabulary than posttrain.envs.appearance.ATTRIBUTES")
    model.attributes.load_state_dict(load_file(os.path.join(directory, EMBEDDINGS_FILE)))
    return model.to(DTYPES[dtype]).train()


def check_matches(model: TransferModel, views, image_size: int, where: str = "method.generator") -> None:
    """A generator whose views or resolution differ from the simulator's stops with an error naming the key."""
    check(tuple(model.views) == tuple(views), f"{where}.views",
          f"the generator renders views {list(model.views)}, the simulator's demonstrations have {list(views)}")
    check(int(model.image_size) == int(image_size), f"{where}.image_size",
          f"the generator renders {model.image_size}x{model.image_size} frames, the simulator's are "
          f"{image_size}x{image_size} (env.image_size)")
