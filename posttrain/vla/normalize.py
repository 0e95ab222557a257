"""Per-dimension normalisation of actions (to [-1, 1] by the data's 1st/99th percentiles, as the paper) and of
proprioceptive states (zero mean, unit variance), from a demonstration set's statistics."""
from __future__ import annotations

import torch

EPS = 1e-6


def normalize_actions(actions: torch.Tensor, q01: torch.Tensor, q99: torch.Tensor) -> torch.Tensor:
    """a ↦ clip(2 (a − q01) / (q99 − q01) − 1, −1, 1) per dimension; a dimension with q99 = q01 (constant in the data)
    becomes 0. Shapes broadcast over the last dim (A)."""
    span = q99 - q01
    scaled = 2 * (actions - q01) / span.clamp(min=EPS) - 1
    return torch.where(span > EPS, scaled.clamp(-1, 1), torch.zeros_like(scaled))


def unnormalize_actions(actions: torch.Tensor, q01: torch.Tensor, q99: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize_actions` on [-1, 1] (a constant dimension comes back as its value)."""
    return (actions.clamp(-1, 1) + 1) / 2 * (q99 - q01) + q01


def normalize_state(state: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """s ↦ (s − mean) / std per dimension (std floored at 1e-6)."""
    return (state - mean) / std.clamp(min=EPS)


def statistics_of(stats: dict) -> dict[str, list[float]]:
    """The lists a VLAModel keeps (`set_statistics`) from a demos dir's `meta/stats.json` content."""
    action, state = stats["action"], stats["observation.state"]
    return {"action_q01": list(action["q01"]), "action_q99": list(action["q99"]),
            "state_mean": list(state["mean"]), "state_std": list(state["std"])}
