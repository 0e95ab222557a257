"""Callbacks a stage can add (`stages.<key>.callbacks`)."""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping


class EarlyStoppingBest(EarlyStopping):
    """Lightning's EarlyStopping that also hands back the best weights: whenever the monitored metric improves, the
    module's `model` weights are copied; at the end of the fit the best copy is loaded back. A stage trained with it
    stops at its plateau on the monitored (validation) split, whatever the seed or the CPU, and its output is the
    model of that plateau, not the one `patience` validations later.

    The copy is not in the checkpoint: a stage resumed from one continues early stopping without it (the cached
    warm-ups this is meant for are retrained, not resumed)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        before = self.best_score.clone()
        super()._run_early_stopping_check(trainer)
        if not torch.equal(before, self.best_score):  # improved (EarlyStopping only moves best_score then)
            module = trainer.lightning_module
            self.best_weights = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
            self.best_epoch = trainer.current_epoch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_weights is not None:
            pl_module.model.load_state_dict(self.best_weights)
