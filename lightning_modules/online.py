"""Lightning glue the online methods (RFT, GRPO, NFT) share as functions: settings checks, one rollout per
training batch, a manual optimizer update per mini-batch, and metric averaging. No training logic lives here;
each method's `training_step` reads top to bottom in its own module."""
from __future__ import annotations

import math
import time

import torch

from datamodules.collate import SFTCollator
from posttrain.rollouts import (Rollout, collect_rollout, concat_rollouts, group_statistics, minibatch_rows,
                                mixed_prompts, policy_logprobs, sampling_generator, select_prompts)
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


def rollout(module, batch: dict, batch_idx: int) -> Rollout:
    """K samples per prompt of the batch from the current policy (settings stored by `configure`), seeded by the
    position in training.

    Dynamic sampling (the NFT/DAPO papers' refill), when `max_generation_batches` > 1: while fewer than
    len(batch) prompts have mixed groups (0 < r̂ < 1, the only ones that carry a gradient), another batch of
    training prompts, drawn at random by the same position-seeded generator (so a resumed run draws the same), is
    sampled and its mixed groups appended, up to `max_generation_batches` batches in all. The result holds the
    step's own batch first (its statistics stay unbiased) and then only the added mixed groups, at most enough to
    reach len(batch) mixed prompts, so every method gets the same number of updates per step.
    """
    datamodule, generation = module.trainer.datamodule, module.generation
    generator = sampling_generator(module.device, module.seed, module.current_epoch, batch_idx, module.global_rank)

    def sample(prompts: dict) -> Rollout:
        return collect_rollout(module.model, prompts, datamodule, num_samples=datamodule.num_samples,
                               max_new_tokens=generation["max_new_tokens"], temperature=generation["temperature"],
                               generator=generator, truncated_is_wrong=module.truncated_is_wrong)

    first = sample(batch)
    target, parts = first.num_prompts, [first]
    missing = target - mixed_prompts(first).numel()
    while missing > 0 and len(parts) < module.max_generation_batches:
        train = datamodule.splits["train"]
        picks = torch.randint(len(train), (target,), generator=generator, device=generator.device).tolist()
        prompts = SFTCollator(datamodule.encoder, with_prompts=True)([train[i] for i in picks])
        prompts = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in prompts.items()}
        extra = sample(prompts)
        added = mixed_prompts(extra)[:missing]  # (P',)
        parts.append(select_prompts(extra, added))
        missing -= added.numel()
    return concat_rollouts(parts, datamodule.encoder.pad_id) if len(parts) > 1 else first


def update(module, loss: torch.Tensor, grad_clip: float | None) -> None:
    """One optimizer step on `loss`: backward, clip the gradient norm, step, advance the schedule."""
    optimizer = module.optimizers()
    optimizer.zero_grad()
    module.manual_backward(loss)
    if grad_clip:
        module.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
    optimizer.step()
    module.lr_schedulers().step()


def configure(module, prompts_per_minibatch: int, normalizer: float | None, grad_clip: float | None,
              generation: dict | None, truncated_is_wrong: bool, max_generation_batches: int, seed: int) -> None:
    """Checks and stores the settings every online method has; optimisation becomes manual (several optimizer
    steps per rollout batch)."""
    check(prompts_per_minibatch >= 1, "method.prompts_per_minibatch", f"must be >= 1, got {prompts_per_minibatch}")
    check(normalizer is None or normalizer > 0, "method.normalizer", f"must be > 0 or null, got {normalizer}")
    check(max_generation_batches >= 1, "method.max_generation_batches",
          f"must be >= 1 (1 = no dynamic sampling), got {max_generation_batches}")
    module.automatic_optimization = False
    module.prompts_per_minibatch, module.normalizer, module.grad_clip = prompts_per_minibatch, normalizer, grad_clip
    module.generation = generation_settings(generation)
    module.truncated_is_wrong, module.max_generation_batches, module.seed = (truncated_is_wrong,
                                                                             max_generation_batches, seed)


def updates_per_batch(module, prompts_per_minibatch: int) -> int:
    """The most mini-batch updates one rollout batch can make (fewer when groups are filtered out)."""
    return max(1, math.ceil(module.trainer.datamodule.batch_size / prompts_per_minibatch))


def train_on_prompts(module, rollout: Rollout, kept: torch.Tensor, loss_of, split: str = "train") -> None:
    """One optimizer update per mini-batch of the kept prompts' samples, then the step's metrics (as `<split>/...`;
    a method with a second rollout per step, e.g. SPARK's reward period, logs it under its own prefix).

    `loss_of(logp, rows, index)` is the method's loss on one mini-batch: logp (B, T-1) are the policy's log-probs of
    the sampled tokens (with gradient), rows the mini-batch's rollout tensors, index its rows in the rollout (B,).
    """
    throughput, parts = Throughput(rollout), []
    for index in minibatch_rows(kept, rollout.num_samples, module.prompts_per_minibatch):
        rows = rollout.rows(index)
        logp = policy_logprobs(module.model, rows, module.generation["temperature"])  # (B, T-1)
        loss, metrics = loss_of(logp, rows, index)
        update(module, loss, module.grad_clip)
        throughput.add(rows)
        parts.append({"loss": loss.detach(), **metrics})
    module.log_metrics(split, {**group_statistics(rollout), **mean_metrics(parts),
                                 "groups_kept": kept.numel() / rollout.batch_prompts, "updates": float(len(parts)),
                                 **throughput.metrics()}, batch_size=rollout.num_prompts)


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
