"""Bradley–Terry scalar reward model: the baseline RM of standard RLHF (Ouyang et al., 2022)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_rm_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Negative log-likelihood of the preferences under the Bradley–Terry model:

        P(y_w ≻ y_l | q) = σ(r(q, y_w) − r(q, y_l)),    L_BT = − E[ log σ(r(q, y_w) − r(q, y_l)) ]

    Args:
        chosen_rewards, rejected_rewards: (B,) scalar rewards r(q, y_w), r(q, y_l).
    Returns:
        (mean loss, metrics): how often the chosen response is rewarded more, the mean margin and the mean reward of
        each side.
    """
    margin = chosen_rewards - rejected_rewards  # (B,)
    losses = -F.logsigmoid(margin)  # (B,)
    metrics = {
        "accuracy": (margin.detach() > 0).float().mean(),
        "rewards/margin": margin.detach().mean(),
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
    }
    return losses.mean(), metrics
