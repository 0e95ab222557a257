"""torchmetrics Metrics shared by the modules."""
from __future__ import annotations

import torch
from torchmetrics import Metric


class ExactMatch(Metric):
    """Fraction of completions judged correct; sums reduce across processes."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor) -> None:
        """correct: (B,) bool or 0/1."""
        self.correct += correct.float().sum().to(self.correct.device)
        self.total += correct.numel()

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1.0)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """ECE of binary predictions: Σ_b (n_b / n) |mean(label)_b − mean(prob)_b| over `bins` equal-width bins of the
    predicted probability. probs, labels: (N,), labels 0/1. Returns a 0-dim float tensor (0 for N = 0)."""
    probs, labels = probs.detach().float().flatten(), labels.detach().float().flatten()
    if probs.numel() == 0:
        return torch.zeros(())
    which = (probs * bins).long().clamp(0, bins - 1)  # (N,)
    gap = torch.zeros(bins).index_add_(0, which.cpu(), (labels - probs).cpu())
    return gap.abs().sum() / probs.numel()  # Σ_b |Σ_{i∈b} (y_i − p_i)| / N = Σ_b (n_b/N) |ȳ_b − p̄_b|
