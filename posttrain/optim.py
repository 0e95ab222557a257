"""Optimizers and learning-rate schedules named by Hydra's `_target_` (`method.optimizer`, `method.scheduler`).

A spec is what the method config holds: a mapping `{_target_: torch.optim.AdamW, lr: 1e-4, ...}` or the partial
Hydra made of it (`_partial_: true`); the module supplies the parameters (and the scheduler its optimizer and
period). Keyword names are checked against the target's signature, so a typo is an error naming its full key.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping

import torch
from hydra.utils import get_object

from posttrain.utils.config import ConfigError, check, check_choice

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 0.0}
DEFAULT_SCHEDULER = {"_target_": "posttrain.optim.warmup_schedule", "decay": "constant"}
DECAYS = ("constant", "linear", "cosine")


def resolve(spec, key: str) -> tuple:
    """(the callable, its keyword arguments) of a spec: a `_target_` mapping or a functools.partial."""
    if isinstance(spec, functools.partial):
        check(not spec.args, key, "give keyword arguments only (the module passes the rest)")
        target, kwargs = spec.func, dict(spec.keywords)
    else:
        check(isinstance(spec, Mapping) and "_target_" in spec, key,
              f"must be a mapping with a _target_ (e.g. torch.optim.AdamW), got {spec!r}")
        kwargs = {k: v for k, v in spec.items() if k not in ("_target_", "_partial_")}
        try:
            target = get_object(spec["_target_"])
        except Exception as error:  # hydra raises ImportError or ValueError depending on what is missing
            raise ConfigError(f"{key}._target_: cannot import {spec['_target_']!r} ({error})") from None
    check(callable(target), f"{key}._target_", f"{target!r} is not callable")
    parameters = inspect.signature(target).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for name in kwargs:
            check(name in parameters, f"{key}.{name}",
                  f"unknown key for {getattr(target, '__qualname__', target)}; known: {sorted(parameters)}")
    return target, kwargs


def plain_spec(spec):
    """A spec as a plain `{_target_, **kwargs}` mapping (a Hydra partial becomes one): what checkpoints store, since
    a partial of Hydra's is not a type `torch.load(weights_only=True)` accepts."""
    if not isinstance(spec, functools.partial):
        return spec
    target = spec.func
    return {"_target_": f"{target.__module__}.{target.__qualname__}", **spec.keywords}


def build_optimizer(params, spec=None, key: str = "method.optimizer") -> torch.optim.Optimizer:
    """The optimizer of `spec` (default AdamW, lr 1e-4) over `params` (tensors or parameter groups)."""
    target, kwargs = resolve(DEFAULT_OPTIMIZER if spec is None else spec, key)
    if "lr" in kwargs:
        check(kwargs["lr"] > 0, f"{key}.lr", f"must be > 0, got {kwargs['lr']}")
    if "weight_decay" in kwargs:
        check(kwargs["weight_decay"] >= 0, f"{key}.weight_decay", f"must be >= 0, got {kwargs['weight_decay']}")
    return target(params, **kwargs)


def build_scheduler(optimizer, period: int, spec=None, key: str = "method.scheduler"):
    """The scheduler of `spec` (default: constant) for `optimizer`; a target with a `period` argument gets the
    number of steps after which the method's schedule restarts (`PostTrainModule.schedule_period`)."""
    target, kwargs = resolve(DEFAULT_SCHEDULER if spec is None else spec, key)
    check("period" not in kwargs, f"{key}.period", "is set by the method (its schedule period), not in config")
    if "period" in inspect.signature(target).parameters:
        kwargs["period"] = period
    return target(optimizer, **kwargs)


def schedule_factor(step: int, period: int, decay: str = "constant", warmup_ratio: float = 0.0,
                    min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at `step`; the schedule restarts every `period` steps
    (methods that rerun training per outer iteration, such as SPIN, restart it each iteration)."""
    step = step % max(period, 1)
    warmup = int(round(warmup_ratio * period))
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, period - warmup)
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def warmup_schedule(optimizer, period: int, decay: str = "constant", warmup_ratio: float = 0.0,
                    min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of each period, then `decay` (constant, linear or cosine) down to
    `min_lr_ratio` times the base rate at the period's end."""
    check_choice(decay, DECAYS, "method.scheduler.decay")
    check(0 <= warmup_ratio < 1, "method.scheduler.warmup_ratio", f"must be in [0, 1), got {warmup_ratio}")
    check(0 <= min_lr_ratio <= 1, "method.scheduler.min_lr_ratio", f"must be in [0, 1], got {min_lr_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, period, decay, warmup_ratio, min_lr_ratio))
