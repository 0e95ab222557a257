"""The closed-loop evaluator of a VLA (`method.evaluator` of InternVLA-M1): the evaluator calls of
`posttrain.evaluators` (setup, update per held-out batch, compute, log_media).

Episode splits (every split but `grounding`: the environment's own, e.g. Meta-World's `val` = held-out layouts,
`test_combos` = held-out task x colour combinations, `test_paraphrase` = held-out instruction phrasings): batches
name reset seeds; the policy plays them in the split's environment, all episodes of a batch in lockstep (one model
call per chunk for all of them), executing the first `execute_steps` actions of every predicted chunk before
predicting again. `<split>/success` is the fraction of episodes that met the task's own success criterion within
`max_steps`; `<split>/steps` the mean episode length. From an env that reports progress signals (Meta-World's
`near_object`, `grasp_success`, `obj_to_target`; `track_progress`), also the partial progress that success alone
hides at small scale: `<split>/reached` and `<split>/grasped`, the fraction of episodes whose gripper ever came
within 3 cm of the object / that ever held and lifted it, and `<split>/distance`, the mean final object-to-goal
distance (metres).

Frame splits (a batch of recorded expert frames, with `actions` and `action_mask`, e.g. EMMA's `offline/<split>`
held-out appearances): the policy's sampled chunk for each frame against the expert's, `<split>/action_mse` (mean
squared error in normalised action units): how far a change of appearance moves the policy's actions, read from
many frames where closed-loop success is too rare to compare.

The `grounding_splits` ({split: the name its metrics are logged under}; default {grounding: grounding}: SFT rows of
held-out grounding QA): the planner's (or, given a VLM alone, e.g. after stage-1 grounding training, its own) greedy
answers, gathered over the split and
scored at the end by `grounding_metrics(examples, completions) -> {metric: value}` (e.g.
`posttrain.envs.grounding.grounding_metrics`: box IoU@0.5, point accuracy, ...), logged as `<name>/<metric>`:
whether the VLM kept its spatial skills through action training. (Gathered on each process: under DDP each process
reports its own shard's values.)

Observations become the model's inputs through `encode(observations, seeds)`, which the method takes from its
data (`RobotDataModule.encode_observations`: the same processor, spatial prompt, views and state normalisation as
the training frames).

Environments are borrowed from a process-wide idle pool (`borrow_env`) and handed back by `close` (`release_env`),
so the next evaluator of the same env config and split, e.g. the next arm of a pipeline, reuses them.

The evaluation's cost is reported beside it: `perf/eval_episodes_per_min` and `perf/eval_env_steps_per_s`
(closed-loop episodes per wall minute and environment steps per wall second, renders, physics and model calls
together).

The scene view of the first `media_episodes` episodes of each episode split becomes a frame grid (one row per
episode, every `media_every`-th step) written to TensorBoard at each evaluation.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric

from posttrain.envs import make_env
from posttrain.evaluators import write_image_grids
from posttrain.generation import generate
from posttrain.utils.config import check


class ClosedLoopEvaluator(nn.Module):
    """Args:
        env: the environment config (`make_env`; each episode split gets the env of that split).
        max_steps: episode length limit; execute_steps: actions of each chunk executed (None: all of them).
        grounding_metrics: (examples, completions) -> {metric: value} for the grounding splits.
        grounding_splits: {split: name its metrics are logged under}; default {grounding: grounding}.
        split_envs: {episode split: env overrides} for splits that are not the environment's own, e.g.
            {held_out_objects: {split: val, appearance: held_out_objects}} (EMMA's appearance sets); a split not
            named here is the environment's split of that name.
        sample_steps, cfg_scale: DDIM steps and guidance scale of the closed-loop policy (None: the model's).
        media_episodes, media_every: frame grids of the first episodes of each split, every that many steps.
    """

    def __init__(self, env: dict, max_steps: int = 150, execute_steps: int | None = None,
                 grounding_metrics: Callable | None = None, max_new_tokens: int = 32, media_episodes: int = 2,
                 media_every: int = 4, sample_steps: int | None = None, cfg_scale: float | None = None,
                 grounding_splits: Mapping[str, str] | None = None,
                 split_envs: Mapping[str, Mapping] | None = None):
        super().__init__()
        check(max_steps > 0, "method.evaluator.max_steps", f"must be > 0, got {max_steps}")
        check(execute_steps is None or execute_steps > 0, "method.evaluator.execute_steps",
              f"must be > 0 or null (the whole chunk), got {execute_steps}")
        self.env_config, self.max_steps, self.execute_steps = dict(env), max_steps, execute_steps
        self.grounding_metrics, self.max_new_tokens = grounding_metrics, max_new_tokens
        self.grounding_splits = dict(grounding_splits or {"grounding": "grounding"})
        self.split_envs = {str(k): dict(v) for k, v in (split_envs or {}).items()}
        self.answers: dict[str, tuple[list[dict], list[str]]] = {}  # split -> (examples, completions)
        self.media_episodes, self.media_every = media_episodes, media_every
        self.sampling = {k: v for k, v in (("steps", sample_steps), ("cfg_scale", cfg_scale)) if v is not None}
        # split -> name -> running mean (success, steps), on the CPU: not submodules, so nothing of the evaluator
        # enters checkpoints; torchmetrics still reduces them over processes in compute
        self.metrics: dict[str, dict[str, MeanMetric]] = {}
        self.envs: dict[str, list] = {}  # split -> environments borrowed from IDLE_ENVS for this evaluator's life
        self.frames: dict[str, list[list[np.ndarray]]] = {}
        self.grids: dict[str, torch.Tensor] = {}
        self.tokenizer, self.encode = None, None
        self.clock = {"episodes": 0, "steps": 0, "wall": 0.0}  # closed-loop cost since the last compute

    def setup(self, splits, tokenizer, is_correct=None) -> None:
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a VLM processor's tokenizer
        for split in splits:
            self.metrics.setdefault(split, {})

    def metric(self, split: str, name: str) -> MeanMetric:
        """The split's running mean of `name`, made on first use."""
        if name not in self.metrics[split]:
            self.metrics[split][name] = MeanMetric()
        return self.metrics[split][name]

    # ---- update -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        if split in self.grounding_splits:
            self.score_grounding(model, batch, split)
        elif "actions" in batch:
            self.score_actions(model, batch, split, seed)
        else:
            self.play(model, batch["seed"].tolist(), split, seed)

    def environments(self, split: str, count: int) -> list:
        pool = self.envs.setdefault(split, [])
        while len(pool) < count:
            pool.append(borrow_env(self.env_config, *self.env_split(split)))
        return pool[:count]

    def env_split(self, split: str) -> tuple[str, dict]:
        """The environment's own split and the overrides that make the evaluation split `split`."""
        overrides = dict(self.split_envs.get(split, {}))
        return overrides.pop("split", split), overrides

    def play(self, model, seeds: list[int], split: str, seed: int) -> None:
        """Plays one episode per seed (in lockstep) and records success and length."""
        started = time.perf_counter()
        envs, device = self.environments(split, len(seeds)), next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        observations = [env.reset(seed=s)[0] for env, s in zip(envs, seeds)]
        done, success, steps = [False] * len(envs), [False] * len(envs), [0] * len(envs)
        progress = [{} for _ in envs]  # per episode: what `track_progress` keeps of the env's progress signals
        recorded = self.frames.setdefault(split, [])
        filming = list(range(len(envs)))[: max(0, self.media_episodes - len(recorded))]
        films = {i: [observations[i]["scene"]] for i in filming}
        execute = self.execute_steps or model.chunk
        while not all(done):
            active = [i for i in range(len(envs)) if not done[i]]
            chunk = self.predict(model, [observations[i] for i in active], [seeds[i] for i in active], generator)
            for row, i in enumerate(active):
                for action in chunk[row, :execute]:
                    observations[i], _, terminated, truncated, info = envs[i].step(action.cpu().numpy())
                    steps[i] += 1
                    if i in films and steps[i] % self.media_every == 0:
                        films[i].append(observations[i]["scene"])
                    success[i] = success[i] or bool(info.get("success", False))
                    track_progress(progress[i], info)
                    if success[i] or terminated or truncated or steps[i] >= self.max_steps:
                        done[i] = True
                        break
        for i in range(len(envs)):
            self.metric(split, "success").update(float(success[i]))
            self.metric(split, "steps").update(float(steps[i]))
            for name, value in progress[i].items():
                self.metric(split, name).update(value)
        recorded.extend(films[i] for i in filming)
        self.clock["episodes"] += len(envs)
        self.clock["steps"] += sum(steps)
        self.clock["wall"] += time.perf_counter() - started

    def predict(self, model, observations: list[dict], seeds: list[int], generator) -> torch.Tensor:
        """Action chunks (N, H, A) in environment units for the observations."""
        check(self.encode is not None, "method.evaluator", "has no observation encoder (the method sets it from its "
              "data: RobotDataModule.encode_observations)")
        return model.unnormalize_actions(self.sample_chunks(model, self.encode(observations, seeds), generator))

    def sample_chunks(self, model, batch: dict, generator) -> torch.Tensor:
        """Normalised action chunks (B, H, A) the policy samples for a batch of encoded observations."""
        device = next(model.parameters()).device
        condition = model.condition(batch["prompt_input_ids"].to(device), batch["prompt_attention_mask"].to(device),
                                    batch["image_inputs"].to(device), batch["views"].to(device))
        return model.sample(condition, batch["state"].to(device), generator, **self.sampling)

    def score_actions(self, model, batch: dict, split: str, seed: int) -> None:
        """Open-loop action error on recorded expert frames: the policy's sampled chunk (normalised, clipped to
        [-1, 1]) against the expert's, squared error averaged over the action dimensions and the chunk's real steps,
        one value per frame (`<split>/action_mse`). Under DDP each process scores its shard (Lightning's sampler
        pads the last one by repeating frames) and the means are reduced in `compute`."""
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)  # the same for every arm (not across splits)
        predicted = self.sample_chunks(model, batch, generator)  # (B, H, A)
        error = chunk_error(predicted.clamp(-1, 1).float(), batch["actions"].to(device).float(),
                            batch["action_mask"].to(device).float())  # (B,)
        self.metric(split, "action_mse").update(error.cpu())

    def score_grounding(self, model, batch: dict, split: str) -> None:
        check(self.grounding_metrics is not None, "method.evaluator.grounding_metrics",
              "needed to score the grounding split")
        tokenizer = self.tokenizer
        out = generate(getattr(model, "planner", model), batch["prompt_input_ids"], batch["prompt_attention_mask"],
                       max_new_tokens=self.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, temperature=0.0, image_inputs=batch.get("image_inputs"))
        completions = tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)
        examples, answers = self.answers.setdefault(split, ([], []))
        examples.extend(batch["examples"])
        answers.extend(completions)

    # ---- results --------------------------------------------------------------------------------------------------
    def compute(self) -> dict[str, torch.Tensor]:
        results = {}
        for split, metrics in self.metrics.items():
            for name, metric in metrics.items():
                if metric.update_called:
                    results[f"{split}/{name}"] = metric.compute()
                    metric.reset()
        for split, (examples, completions) in self.answers.items():
            name = self.grounding_splits[split]
            results.update({f"{name}/{k}": torch.tensor(v) for k, v in self.grounding_metrics(examples,
                                                                                             completions).items()})
        self.answers = {}
        if self.clock["episodes"]:  # the evaluation's cost: episodes (renders, physics, model calls) per wall minute
            wall = max(self.clock["wall"], 1e-9)
            results["perf/eval_episodes_per_min"] = torch.tensor(60.0 * self.clock["episodes"] / wall)
            results["perf/eval_env_steps_per_s"] = torch.tensor(self.clock["steps"] / wall)
        self.clock = {"episodes": 0, "steps": 0, "wall": 0.0}
        self.grids = {split: frame_grid(films) for split, films in self.frames.items() if films}
        self.frames = {}
        return results

    def log_media(self, loggers, step: int) -> None:
        """The last evaluation's frame grids (a row per episode) to every TensorBoard logger."""
        write_image_grids(loggers, self.grids, "episodes", step)
        self.grids = {}

    def close(self) -> None:
        """Hands the environments back to the process's idle pool (the next evaluator of the same env, e.g. the
        next arm of a pipeline, reuses them). They stay open until `close_idle_envs` (the tests call it after each
        test) or the process's exit (Meta-World closes its renderers then, `posttrain.envs.metaworld.close_all`)."""
        for split, pool in self.envs.items():
            for env in pool:
                release_env(env, self.env_config, *self.env_split(split))
        self.envs = {}


# Environments no evaluator holds, by their config: making one (a simulator, a GL context and a renderer per view)
# costs seconds, so a pipeline's arms reuse them. Every episode starts with reset(seed=...), which sets the layout,
# the appearance and the random state, so a reused environment plays exactly as a new one.
IDLE_ENVS: dict[str, list] = {}


def env_key(config: Mapping, split: str, overrides: Mapping) -> str:
    """The pool's key: the config, split and overrides as sorted JSON, so equal settings give one key whatever their
    order (values JSON cannot write, e.g. an OmegaConf list, by their text)."""
    return json.dumps([dict(config), split, dict(overrides)], sort_keys=True, default=str)


def borrow_env(config: Mapping, split: str, overrides: Mapping):
    """An idle environment of this config, split and overrides, or a new one (`make_env`)."""
    idle = IDLE_ENVS.get(env_key(config, split, overrides))
    return idle.pop() if idle else make_env(config, where="method.evaluator.env", split=split, **overrides)


def release_env(env, config: Mapping, split: str, overrides: Mapping) -> None:
    """Back to the idle pool, for a later `borrow_env` of the same config, split and overrides."""
    IDLE_ENVS.setdefault(env_key(config, split, overrides), []).append(env)


def close_idle_envs() -> None:
    """Closes every idle environment (their renderers before the GL context goes)."""
    for idle in IDLE_ENVS.values():
        for env in idle:
            env.close()
    IDLE_ENVS.clear()


def chunk_error(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) squared error of (B, H, A) chunks, mean over A and over the steps where `mask` (B, H) is 1."""
    per_step = (predicted - target).pow(2).mean(-1)  # (B, H)
    return (per_step * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def track_progress(progress: dict[str, float], info: dict) -> None:
    """Folds one step's progress signals (a Meta-World env's `near_object`, `grasp_success`, `obj_to_target`) into
    the episode's: `reached` and `grasped`, 1 if the gripper was ever near the object / the object ever held and
    lifted (Meta-World's `grasp_success` needs the lift, so a push task's episodes stay at 0); `distance`, the
    object's distance to the goal at the episode's last step (metres)."""
    if "near_object" in info:
        progress["reached"] = max(progress.get("reached", 0.0), float(info["near_object"]))
    if "grasp_success" in info:
        progress["grasped"] = max(progress.get("grasped", 0.0), float(info["grasp_success"]))
    if "obj_to_target" in info:
        progress["distance"] = float(info["obj_to_target"])


def frame_grid(films: list[list[np.ndarray]], pad: int = 1) -> torch.Tensor:
    """(3, H', W') float in [0, 1]: one row of frames per episode (uint8 (h, w, 3) each, all one size)."""
    h, w = films[0][0].shape[:2]
    columns = max(len(f) for f in films)
    grid = np.full((len(films) * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, film in enumerate(films):
        for c, frame in enumerate(film):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[top: top + h, left: left + w] = frame
    return torch.from_numpy(grid).permute(2, 0, 1).float() / 255.0
