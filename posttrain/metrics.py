"""torchmetrics Metrics shared by the modules."""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


def pair_judgement_metrics(p_forward: torch.Tensor, p_backward: torch.Tensor, bins: int = 10) -> dict[str,
                                                                                                      torch.Tensor]:
    """Accuracy and calibration of a pairwise judge on pairs whose first response is the better one (gold labels).

    p_forward: (N,) P(A ≻ B) with A = the better response; p_backward: (N,) P(A ≻ B) with the two swapped.
        pair_accuracy            mean 1[P̄ > 0.5],  P̄ = ½ (p_forward + 1 − p_backward) (the symmetrised judgement)
        pair_accuracy_one_order  mean over both orders of 1[the verdict of that order is right]
        ece, brier               of the 2N one-order probabilities P(A ≻ B) against their labels (1, then 0)
        position_consistency     mean |p_forward + p_backward − 1|, in [0, 1]: despite the name an INCONSISTENCY,
                                 lower is better. 0 when swapping the order flips the verdict exactly (no
                                 position bias); 1 when the verdict follows the slot whatever the order. The
                                 logged name is kept so results and scripts stay comparable across runs.
    """
    p_forward, p_backward = p_forward.detach().float().flatten(), p_backward.detach().float().flatten()
    symmetric = 0.5 * (p_forward + 1 - p_backward)  # (N,)
    probs = torch.cat([p_forward, p_backward])  # (2N,)
    labels = torch.cat([torch.ones_like(p_forward), torch.zeros_like(p_backward)])  # (2N,)
    return {
        "pair_accuracy": (symmetric > 0.5).float().mean(),
        "pair_accuracy_one_order": ((probs > 0.5).float() == labels).float().mean(),
        "ece": expected_calibration_error(probs, labels, bins),
        "brier": ((probs - labels) ** 2).mean(),
        "position_consistency": (p_forward + p_backward - 1).abs().mean(),
    }


class PairJudgements(Metric):
    """Collects (p_forward, p_backward) per pair (gathered across processes) for `pair_judgement_metrics`."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("p_forward", default=[], dist_reduce_fx="cat")
        self.add_state("p_backward", default=[], dist_reduce_fx="cat")

    def update(self, p_forward: torch.Tensor, p_backward: torch.Tensor) -> None:
        """p_forward, p_backward: (B,) as in `pair_judgement_metrics`."""
        self.p_forward.append(p_forward.detach().float().flatten())
        self.p_backward.append(p_backward.detach().float().flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        return pair_judgement_metrics(dim_zero_cat(self.p_forward), dim_zero_cat(self.p_backward))


def kendall_tau_within_and_across(values: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Kendall's τ between `values` and gold `scores` over pairs of items in the same group (within) and in
    different groups (across): (concordant − discordant) / pairs, over pairs whose gold scores differ (−inf allowed;
    tied values count as neither). For a scalar reward model with groups = prompts, `across` asks whether r(q, y)
    means the same thing for every prompt, which Bradley–Terry training never asks of it.

    values, scores: (N,) float; groups: (N,) int. Returns (within, across) 0-dim tensors (nan where no pair exists).
    """
    values, scores, groups = values.detach().float().flatten(), scores.detach().double().flatten(), groups.flatten()
    gold = (scores[:, None] > scores[None, :]).float() - (scores[:, None] < scores[None, :]).float()  # (N, N)
    agree = gold * torch.sign(values[:, None] - values[None, :])  # (N, N): +1 concordant, −1 discordant
    same = groups[:, None] == groups[None, :]  # (N, N)
    comparable = (gold != 0).triu(diagonal=1)  # (N, N): each unordered pair once

    def tau(mask: torch.Tensor) -> torch.Tensor:
        return agree[mask].sum() / mask.sum() if mask.any() else torch.tensor(float("nan"))

    return tau(comparable & same), tau(comparable & ~same)
