"""SPIN: Self-Play fine-tuNing (Chen et al., ICML 2024), paper Eq. 4.7."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge")


def spin_loss(
    policy_real_logps: torch.Tensor,
    policy_generated_logps: torch.Tensor,
    opponent_real_logps: torch.Tensor,
    opponent_generated_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict]:
    """The main player's loss against the frozen opponent θ_t:

        L_SPIN(θ, θ_t) = E[ ℓ( λ log p_θ(y|x)/p_θt(y|x) − λ log p_θ(y'|x)/p_θt(y'|x) ) ]

    with y the ground-truth response, y' ~ p_θt(·|x) the opponent's own response, λ = `beta`, and
    ℓ(t) = log(1 + e^{−t}) ("sigmoid", the paper's choice) or max(0, 1 − t) ("hinge", in the official code only).
    Log-probs are sums over response tokens, as in the official implementation. Pairs with y' == y give exactly zero
    loss gradient and still count in the mean.

    Args:
        policy_real_logps, policy_generated_logps: (B,) Σ_t log p_θ of y and y'.
        opponent_real_logps, opponent_generated_logps: (B,) the same under the frozen opponent θ_t.
        beta: λ > 0.
    Returns:
        (mean loss, metrics) where the metrics are the implicit rewards λ log p_θ/p_θt of both responses,
        their margin and how often the real response is rewarded more.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    real_reward = beta * (policy_real_logps - opponent_real_logps)  # (B,)
    generated_reward = beta * (policy_generated_logps - opponent_generated_logps)  # (B,)
    margin = real_reward - generated_reward  # (B,) = λ · logits of the official code
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(margin)
    else:
        losses = torch.relu(1.0 - margin)
    metrics = {
        "rewards/real": real_reward.detach().mean(),
        "rewards/generated": generated_reward.detach().mean(),
        "rewards/margin": margin.detach().mean(),
        "rewards/accuracy": (margin.detach() > 0).float().mean(),
    }
    return losses.mean(), metrics
