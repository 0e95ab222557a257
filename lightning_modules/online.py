"""Lightning glue the online methods (RFT, GRPO, NFT) share as functions: settings checks, one rollout per
training batch, a manual optimizer update per mini-batch, and metric averaging. No training logic lives here;
each method's `training_step` reads top to bottom in its own module."""
from __future__ import annotations

import math
import time

import torch

from posttrain.rollouts import Rollout, collect_rollout, sampling_generator
from posttrain.utils.config import check

GENERATION_DEFAULTS = {"temperature": 1.0, "max_new_tokens": 8}


def generation_settings(generation: dict | None) -> dict:
    """Rollout sampling settings. Only temperature is allowed to reshape the distribution: the training forward
    divides logits by the same temperature, while top-k/top-p truncation would make π_θ ≠ π_old at R = 1."""
    cfg = {**GENERATION_DEFAULTS, **(generation or {})}
    unknown = set(cfg) - set(GENERATION_DEFAULTS)
    check(not unknown, "method.generation", f"unknown keys {sorted(unknown)}; online methods sample with "
          f"{sorted(GENERATION_DEFAULTS)} only (top-k/top-p would bias the importance ratios)")
    check(cfg["temperature"] > 0, "method.generation.temperature", f"must be > 0, got {cfg['temperature']}")
    check(cfg["max_new_tokens"] > 0, "method.generation.max_new_tokens", f"must be > 0, got {cfg['max_new_tokens']}")
    return cfg


def rollout(module, batch: dict, batch_idx: int, generation: dict, truncated_is_wrong: bool) -> Rollout:
    """K samples per prompt of the batch from the current policy, seeded by the position in training."""
    datamodule = module.trainer.datamodule
    generator = sampling_generator(module.device, module.seed, module.current_epoch, batch_idx, module.global_rank)
    return collect_rollout(module.model, batch, datamodule, num_samples=datamodule.num_samples,
                           max_new_tokens=generation["max_new_tokens"], temperature=generation["temperature"],
                           generator=generator, truncated_is_wrong=truncated_is_wrong)


def update(module, loss: torch.Tensor, grad_clip: float | None) -> None:
    """One optimizer step on `loss`: backward, clip the gradient norm, step, advance the schedule."""
    optimizer = module.optimizers()
    optimizer.zero_grad()
    module.manual_backward(loss)
    if grad_clip:
        module.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
    optimizer.step()
    module.lr_schedulers().step()


def updates_per_batch(module, prompts_per_minibatch: int) -> int:
    """The most mini-batch updates one rollout batch can make (fewer when groups are filtered out)."""
    return max(1, math.ceil(module.trainer.datamodule.batch_size / prompts_per_minibatch))


def mean_metrics(parts: list[dict]) -> dict:
    return {k: torch.stack([torch.as_tensor(p[k], dtype=torch.float32) for p in parts]).mean() for k in parts[0]} \
        if parts else {}


class Throughput:
    """Tokens per second of the rollout (generated tokens) and of training (tokens through forward + backward)."""

    def __init__(self, rollout: Rollout):
        self.rollout_tokens, self.rollout_seconds = int(rollout.mask.sum()), rollout.seconds
        self.train_tokens, self.start = 0, time.perf_counter()

    def add(self, rows: dict) -> None:
        self.train_tokens += int(rows["attention_mask"].sum())

    def metrics(self) -> dict:
        out = {"rollout_tokens_per_s": self.rollout_tokens / max(self.rollout_seconds, 1e-9)}
        if self.train_tokens:
            out["train_tokens_per_s"] = self.train_tokens / max(time.perf_counter() - self.start, 1e-9)
        return out
