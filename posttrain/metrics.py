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
