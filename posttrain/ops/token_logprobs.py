"""Per-token log-probabilities of labels under logits (placeholder reference; the kernels issue adds the compiled op)."""
from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """log softmax(logits)[label] per row, float32; rows whose label is ignore_index give 0.

    Args:
        logits: (N, V) any float dtype.
        labels: (N,) int64, ignore_index marks rows without a label.
    Returns:
        (N,) float32.
    """
    valid = labels != ignore_index  # (N,)
    safe = torch.where(valid, labels, torch.zeros_like(labels))  # (N,)
    logits32 = logits.float()  # (N, V)
    picked = logits32.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N,)
    out = picked - torch.logsumexp(logits32, dim=-1)  # (N,)
    return torch.where(valid, out, torch.zeros_like(out))
