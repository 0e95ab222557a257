"""DPO: Direct Preference Optimization (Rafailov et al., NeurIPS 2023), with the IPO (Azar et al., AISTATS 2024)
and hinge (SLiC, Zhao et al., 2023; on reference-normalised likelihoods as in RSO, Liu et al., ICLR 2024) losses
on the same log-likelihood ratios."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def log_ratio(policy_logps: torch.Tensor, ref_logps: torch.Tensor, lengths: torch.Tensor | None = None
              ) -> torch.Tensor:
    """log π_θ(y|x)/π_ref(y|x) from summed log-probs: (B,); per token (divided by `lengths`, (B,)) when given."""
    ratio = policy_logps - ref_logps  # (B,)
    return ratio if lengths is None else ratio / lengths.clamp(min=1)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The preference loss of a batch of pairs (x, y_w ≻ y_l) against a frozen reference π_ref:

        h = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)

        sigmoid  L = −(1 − ε) log σ(β h) − ε log σ(−β h)
                 ε = 0 is DPO (Rafailov et al., Eq. 7); ε > 0 is conservative DPO (Mitchell, 2023): the label is
                 taken as flipped with probability ε, so the loss is minimal at a finite h = logit(1 − ε) / β.
        ipo      L = (h̄ − 1/(2β))²   (Azar et al., Eq. 17, with τ = β)
        hinge    L = max(0, 1 − β h) = β max(0, 1/β − h)   (SLiC's hinge with margin δ = 1/β, on h)

    For sigmoid and hinge, log π(y|x) are sums over the response tokens, as in the DPO paper. IPO uses h̄, the same
    ratio on log-probs averaged over each response's tokens (Σ_t log π / |y|): IPO regresses the margin onto the
    fixed target 1/(2β), and a summed margin grows with the response length, so the same β would ask different
    margins of short and long responses. The paper writes Eq. 17 on π(y|x); the averaging is what its authors
    advised for language models and what TRL does (its PR #1265).

    Args:
        policy_chosen_logps, policy_rejected_logps: (B,) Σ_t log π_θ of y_w and y_l.
        ref_chosen_logps, ref_rejected_logps: (B,) the same under π_ref (zeros for a reference-free loss).
        beta: β > 0; larger keeps π_θ closer to π_ref.
        loss_type: "sigmoid", "ipo" or "hinge".
        label_smoothing: ε in [0, 0.5), sigmoid only.
        chosen_lengths, rejected_lengths: (B,) response token counts; required by ipo, unused otherwise.
    Returns:
        (mean loss, metrics): the implicit rewards r = β log π_θ/π_ref of both responses (on averaged log-probs
        for ipo) as `rewards/chosen`, `rewards/rejected`, their difference `rewards/margins`, the fraction of pairs
        with r_w > r_l `rewards/accuracies`, and the policy's summed log-probs `logps/chosen`, `logps/rejected`;
        all batch means, detached.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing > 0 and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, got loss_type {loss_type!r}")
    if loss_type == "ipo" and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError("the ipo loss needs chosen_lengths and rejected_lengths (it averages over tokens)")
    if loss_type != "ipo":
        chosen_lengths = rejected_lengths = None  # sums
    chosen_ratio = log_ratio(policy_chosen_logps, ref_chosen_logps, chosen_lengths)  # (B,)
    rejected_ratio = log_ratio(policy_rejected_logps, ref_rejected_logps, rejected_lengths)  # (B,)
    h = chosen_ratio - rejected_ratio  # (B,)
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = torch.relu(1.0 - beta * h)
    chosen_reward = beta * chosen_ratio.detach()  # (B,)
    rejected_reward = beta * rejected_ratio.detach()  # (B,)
    metrics = {
        "rewards/chosen": chosen_reward.mean(),
        "rewards/rejected": rejected_reward.mean(),
        "rewards/accuracies": (chosen_reward > rejected_reward).float().mean(),
        "rewards/margins": (chosen_reward - rejected_reward).mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    return losses.mean(), metrics
