"""Held-out evaluation shared by the reward models: every held-out pair is judged in both orders, and each split's
accuracy and calibration (`posttrain.metrics.pair_judgement_metrics`) become `<split>/<metric>` and a row of the
module's `eval_history`, so a generative judge and a scalar RM are compared on identical pairs and metrics.

Functions of the module (not a base class), called from its setup / validation_step / on_validation_epoch_end.
"""
from __future__ import annotations

import torch
from torch import nn

from posttrain.metrics import PairJudgements


def setup(module) -> None:
    """One PairJudgements per held-out split of the datamodule, in `module.pair_judgements`."""
    if not hasattr(module, "pair_judgements"):
        module.pair_judgements = nn.ModuleDict()
    for split in getattr(module.trainer.datamodule, "eval_splits", ()):
        if split not in module.pair_judgements:
            module.pair_judgements[split] = PairJudgements()


def split_of(module, dataloader_idx: int) -> str:
    return module.trainer.datamodule.eval_splits[dataloader_idx]


def record(module, split: str, p_forward: torch.Tensor, p_backward: torch.Tensor) -> None:
    """p_forward: (B,) P(A ≻ B) with A = chosen; p_backward: (B,) with A = rejected. Held-out labels are gold."""
    module.pair_judgements[split].update(p_forward, p_backward)


def finish(module, extra: dict | None = None) -> None:
    """Logs every split's metrics and appends them (plus `extra`, already-reduced floats) to `eval_history`; the
    sanity-check validation of a fresh run is kept as the start row (epoch -1) when the module asks for it."""
    entry = {"epoch": module.current_epoch, "step": module.global_step, **module.progress_info()}
    for split, judgements in module.pair_judgements.items():
        if not judgements.update_called:
            continue
        for name, value in judgements.compute().items():
            module.log(f"{split}/{name}", value, prog_bar=name == "pair_accuracy")
            entry[f"{split}/{name}"] = float(value)
        judgements.reset()
    for key, value in (extra or {}).items():
        module.log(key, value)
        entry[key] = float(value)
    if not module.trainer.sanity_checking:
        module.eval_history.append(entry)
    elif module.record_start_evaluation and module.global_step == 0 and not module.eval_history:
        module.eval_history.append({**entry, "epoch": -1})
