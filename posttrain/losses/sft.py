"""Supervised fine-tuning loss."""
from __future__ import annotations

import torch


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Token-averaged negative log-likelihood of response tokens.

        L = - Σ_{i,t} m_it log p_θ(y_it | x_i, y_i<t) / Σ_{i,t} m_it

    Args:
        token_logps: (B, T) log-probs of the label tokens.
        mask: (B, T) 1 on response tokens, 0 on prompt and padding.
    """
    mask = mask.to(token_logps.dtype)
    count = mask.sum().clamp(min=1.0)
    nll = -(token_logps * mask).sum() / count
    return nll, {"nll": nll.detach(), "tokens": count.detach()}
