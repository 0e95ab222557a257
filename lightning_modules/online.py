"""Lightning glue the online methods (RFT, GRPO, NFT, SPARK) share as functions over explicit arguments: their
checked settings, what they take from the fit (the processor, the training prompts dynamic sampling draws from,
the batch size), a manual optimizer update per mini-batch, and metric averaging. No training logic lives here;
each method's `training_step` reads top to bottom in its own module.

Several processes (DDP, FSDP; docs/scale.md): each process draws its own prompts (Lightning's distributed sampler,
and a dynamic-sampling refill seeded by the process's rank) and keeps its own groups, but every backward is a
collective, so all processes make the same number of updates per rollout step: the largest process's count (one
all_reduce MAX), a process out of mini-batches padding with zero-weight updates (`train_on_prompts`). The logged
statistics are gathered from every process (`log_gathered`)."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from posttrain.processors import ImageInputs
from posttrain.rollouts import (
    Rollout,
    RolloutSettings,
    group_statistics,
    minibatch_rows,
    policy_logprobs,
    sampling_generator,
)
from posttrain.utils import distributed
from posttrain.utils.config import ConfigError, check, with_defaults

GENERATION_DEFAULTS = {"temperature": 1.0, "max_new_tokens": 8}


def generation_settings(generation: dict | None) -> dict:
    """Rollout sampling settings (`method.generation`). Only temperature reshapes the distribution: the training
    forward divides logits by the same temperature, while top-k/top-p truncation would make π_θ ≠ π_old at R = 1,
    so they are unknown keys here."""
    cfg = with_defaults(generation, GENERATION_DEFAULTS, "method.generation")
    check(cfg["temperature"] > 0, "method.generation.temperature", f"must be > 0, got {cfg['temperature']}")
    check(cfg["max_new_tokens"] > 0, "method.generation.max_new_tokens", f"must be > 0, got {cfg['max_new_tokens']}")
    return cfg


@dataclass(frozen=True)
class OnlineSettings:
    """What every online method's rollout step and mini-batch updates need.

    rollout: K, sampling, truncation rule and dynamic sampling budget (`posttrain.rollouts.RolloutSettings`).
    prompts_per_minibatch: questions per optimizer step (each brings its K answers).
    normalizer: C, the constant dividing a token-sum loss; None = prompts_per_minibatch * K (`loss_normalizer`).
    grad_clip: gradient-norm clip per optimizer step; None disables it.
    seed: seeds the rollouts by position in training (a resumed run draws the same samples).
    """

    rollout: RolloutSettings
    prompts_per_minibatch: int
    normalizer: float | None
    grad_clip: float | None
    seed: int

    @property
    def loss_normalizer(self) -> float:
        return self.normalizer or self.prompts_per_minibatch * self.rollout.num_samples


def online_settings(num_samples: int, prompts_per_minibatch: int, normalizer: float | None, grad_clip: float | None,
                    generation: dict | None, truncated_is_wrong: bool, max_generation_batches: int,
                    seed: int) -> OnlineSettings:
    """The checked settings of an online method's constructor arguments (`method.<name>` in errors)."""
    check(num_samples >= 2, "method.num_samples", f"must be >= 2 (group statistics need a group), got {num_samples}")
    check(prompts_per_minibatch >= 1, "method.prompts_per_minibatch", f"must be >= 1, got {prompts_per_minibatch}")
    check(normalizer is None or normalizer > 0, "method.normalizer", f"must be > 0 or null, got {normalizer}")
    check(grad_clip is None or grad_clip >= 0, "method.grad_clip", f"must be >= 0 or null, got {grad_clip}")
    check(max_generation_batches >= 1, "method.max_generation_batches",
          f"must be >= 1 (1 = no dynamic sampling), got {max_generation_batches}")
    generation = generation_settings(generation)
    rollout = RolloutSettings(num_samples=num_samples, temperature=generation["temperature"],
                              max_new_tokens=generation["max_new_tokens"], truncated_is_wrong=truncated_is_wrong,
                              max_generation_batches=max_generation_batches)
    return OnlineSettings(rollout=rollout, prompts_per_minibatch=prompts_per_minibatch, normalizer=normalizer,
                          grad_clip=grad_clip, seed=seed)


# ---- what an online method takes from the fit -----------------------------------------------------------------
def data_processor(trainer):
    """The processor the fit's batches were encoded with (`posttrain.processors`: a TextProcessor, or for a
    vision-language model a VisionProcessor), the DataModule's public `processor` beside its `eval_splits` and
    `is_correct`: rollouts decode and pack with it, SPARK encodes its recycled prompts and judge questions with it.
    It is the model's tokenizer or processor with the data's `max_length` and `prompt_template`."""
    processor = getattr(trainer.datamodule, "processor", None)
    if processor is None:
        raise ConfigError("data: online methods need a DataModule with a `processor` (posttrain.processors) that "
                          "encodes its batches, e.g. datamodules.prompts.PromptDataModule")
    return processor


class TrainingPrompts:
    """Dynamic sampling's refill: `draw(n, generator)` -> a batch of n training examples picked uniformly at random
    by `generator`, collated exactly as the step's own batches are, on `device`.

    It holds the fit's training dataloader's own dataset and collate function (`of(trainer, device)`), so the
    refill draws from the same examples as the batches, encoded the same way, whatever DataModule (or plain
    dataloader) the fit was given, and nothing of the DataModule is read.
    """

    def __init__(self, dataset: Sequence[dict], collate, device):
        self.dataset, self.collate, self.device = dataset, collate, device

    @classmethod
    def of(cls, trainer, device) -> TrainingPrompts:
        loader = trainer.train_dataloader
        return cls(loader.dataset, loader.collate_fn, device)

    def __call__(self, n: int, generator: torch.Generator) -> dict:
        picks = torch.randint(len(self.dataset), (n,), generator=generator, device=generator.device).tolist()
        batch = self.collate([self.dataset[i] for i in picks])  # a VLM's batch brings its image_inputs
        return {k: v.to(self.device) if isinstance(v, (torch.Tensor, ImageInputs)) else v for k, v in batch.items()}


def batch_size(trainer) -> int:
    """Prompts per training batch, from the fit's training dataloader (set up first if the fit has not yet)."""
    trainer.estimated_stepping_batches  # noqa: B018 -- sets up the training dataloader when called before the fit loop
    return trainer.train_dataloader.batch_size


def updates_per_batch(trainer, prompts_per_minibatch: int) -> int:
    """The most mini-batch updates one rollout batch can make (fewer when groups are filtered out)."""
    return max(1, math.ceil(batch_size(trainer) / prompts_per_minibatch))


def schedule_period(trainer, settings: OnlineSettings) -> int:
    """Optimizer steps of the run: every rollout batch makes up to `updates_per_batch` of them."""
    return int(trainer.estimated_stepping_batches) * updates_per_batch(trainer, settings.prompts_per_minibatch)


def step_generator(module, seed: int, batch_idx: int) -> torch.Generator:
    """The rollout generator of this training step, seeded by its position (a resumed run draws the same)."""
    return sampling_generator(module.device, seed, module.current_epoch, batch_idx, module.global_rank)


# ---- updates ----------------------------------------------------------------------------------------------------
def update(module, loss: torch.Tensor, grad_clip: float | None) -> None:
    """One optimizer step of `module` (manual optimisation) on `loss`: backward, clip the gradient norm, step,
    advance the schedule."""
    optimizer = module.optimizers()
    optimizer.zero_grad()
    module.manual_backward(loss)
    if grad_clip:
        module.clip_gradients(optimizer, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
    optimizer.step()
    module.lr_schedulers().step()


def train_on_prompts(module, rollout: Rollout, kept: torch.Tensor, loss_of, settings: OnlineSettings,
                     split: str = "train") -> None:
    """One optimizer update of `module.model` per mini-batch of the kept prompts' samples, then the step's metrics
    (as `<split>/...`; a method with a second rollout per step, e.g. SPARK's reward period, logs it under its own
    prefix), averaged over processes.

    `loss_of(logp, rows, index)` is the method's loss on one mini-batch: logp (B, T-1) are the policy's log-probs of
    the sampled tokens (with gradient), rows the mini-batch's rollout tensors, index its rows in the rollout (B,).

    Under DDP or FSDP every backward is a collective, and processes keep different numbers of groups, so all of them
    make the largest process's number of updates: a process out of mini-batches makes padded ones
    (`padding_loss`), whose gradient is zero, so each update's gradient is the mean over processes of the real
    mini-batches' gradients (a process without one adds zero, as a filtered-out group does to the token sum). Every
    process then steps with the same all-reduced gradient, so their parameters stay identical.
    """
    throughput, parts = Throughput(rollout), []
    minibatches = minibatch_rows(kept, rollout.num_samples, settings.prompts_per_minibatch)
    updates = distributed.agreed_max(len(minibatches), module.device)
    for step in range(updates):
        if step >= len(minibatches):
            update(module, padding_loss(module.model, rollout, settings.rollout.temperature), settings.grad_clip)
            continue
        index = minibatches[step]
        rows = rollout.rows(index)
        logp = policy_logprobs(module.model, rows, settings.rollout.temperature)  # (B, T-1)
        loss, metrics = loss_of(logp, rows, index)
        update(module, loss, settings.grad_clip)
        throughput.add(rows)
        parts.append({"loss": loss.detach(), **metrics})
    prompts = rollout.batch_prompts
    module.num_tokens = getattr(module, "num_tokens", 0) + throughput.train_tokens  # as TRL's `num_tokens`
    log_gathered(module, split, {
        **{name: (value, prompts) for name, value in group_statistics(rollout).items()},
        **{name: (value, len(parts)) for name, value in mean_metrics(parts).items()},
        "groups_kept": (kept.numel() / prompts, prompts),
        "padded_updates": (float(updates - len(parts)), 1.0),
        **{name: (value, 1.0) for name, value in throughput.metrics().items()},
    }, batch_size=rollout.num_prompts)
    module.log(f"{split}/updates", float(updates), batch_size=rollout.num_prompts)  # the same on every process


def padding_loss(model, rollout: Rollout, temperature: float) -> torch.Tensor:
    """A zero-weight loss through the whole policy (0 · Σ log π_θ of the rollout's first row): its backward gives
    every parameter a zero gradient, so DDP's reducer fires its all-reduce (and FSDP its all-gather and
    reduce-scatter) like a real update's, adding nothing to the mean."""
    rows = rollout.rows(torch.zeros(1, dtype=torch.long, device=rollout.input_ids.device))
    return 0.0 * policy_logprobs(model, rows, temperature).sum()


def log_gathered(module, split: str, metrics: dict[str, tuple[object, float]], batch_size: int) -> None:
    """Logs `{name: (value, weight)}` as `<split>/<name>`, each the weighted mean over processes (a name only some
    processes report, e.g. a loss where others made no update, averages over those); one gather, whatever names
    each process has, so the processes' collectives stay in step."""
    module.log_metrics(split, distributed.weighted_means(metrics), batch_size=batch_size, sync_dist=False)


def weighted(metrics: dict, weight: float) -> dict[str, tuple[object, float]]:
    """Every metric with the same weight, for `log_gathered`."""
    return {name: (value, weight) for name, value in metrics.items()}


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
