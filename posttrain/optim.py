"""Optimizers and learning-rate schedules from plain config dicts (`method.optimizer`, `method.scheduler`)."""
from __future__ import annotations

import math

import torch

from posttrain.utils.config import check, check_choice

OPTIMIZERS = {"adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
SCHEDULES = ("constant", "linear", "cosine")


def build_optimizer(params, name: str = "adamw", lr: float = 1e-4, weight_decay: float = 0.0, **kwargs):
    check_choice(name, OPTIMIZERS, "method.optimizer.name")
    check(lr > 0, "method.optimizer.lr", f"must be > 0, got {lr}")
    check(weight_decay >= 0, "method.optimizer.weight_decay", f"must be >= 0, got {weight_decay}")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **kwargs)


def schedule_factor(step: int, period: int, name: str = "constant", warmup_ratio: float = 0.0, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at `step`; the schedule restarts every `period` steps
    (methods that rerun training per outer iteration, such as SPIN, restart it each iteration)."""
    step = step % max(period, 1)
    warmup = int(round(warmup_ratio * period))
    if step < warmup:
        return (step + 1) / warmup
    if name == "constant":
        return 1.0
    progress = (step - warmup) / max(1, period - warmup)
    decay = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_scheduler(optimizer, period: int, name: str = "constant", warmup_ratio: float = 0.0, min_lr_ratio: float = 0.0):
    check_choice(name, SCHEDULES, "method.scheduler.name")
    check(0 <= warmup_ratio < 1, "method.scheduler.warmup_ratio", f"must be in [0, 1), got {warmup_ratio}")
    check(0 <= min_lr_ratio <= 1, "method.scheduler.min_lr_ratio", f"must be in [0, 1], got {min_lr_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, period, name, warmup_ratio, min_lr_ratio)
    )
