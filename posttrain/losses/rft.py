"""RFT: rejection-sampling fine-tuning (Yuan et al., arXiv 2308.01825; the baseline of the NFT paper)."""
from __future__ import annotations

import torch


def rft_loss(logp: torch.Tensor, correct: torch.Tensor, mask: torch.Tensor,
             normalizer: float = 1000.0) -> tuple[torch.Tensor, dict]:
    """Maximum likelihood on the model's own correct samples; wrong samples are discarded:

        L(θ) = − Σ_i r_i Σ_t log π_θ(a_it | q_i, a_i<t) / C

    The sum over tokens divided by a constant C is the NFT paper's RFT baseline (its NFT loss with the negative
    weight 0 and ω = 1; at R = 1 the gradients coincide), so RFT and NFT differ only in the negatives.

    Args:
        logp: (B, T) log π_θ of the response tokens (with gradient).
        correct: (B,) 1 for a verified-correct sample, 0 otherwise.
        mask: (B, T) 1 on response tokens.
    Returns:
        (loss, metrics): `nll`, the mean negative log-likelihood per kept token, and `kept_tokens`.
    """
    keep = mask.to(logp.dtype) * correct.to(logp.dtype)[:, None]  # (B, T)
    total = -(logp * keep).sum()
    kept = keep.sum()
    return total / normalizer, {"nll": total.detach() / kept.clamp(min=1), "kept_tokens": kept.detach()}
