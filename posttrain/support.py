"""Exact distances between a model's answer distribution and a known data distribution with finite support.

When p_data(·|x) is known and puts its mass on a few strings (`datamodules.tasks.decomposition`), the model's
probability of each of them, p_θ(y|x) = Π_j p_θ(y_j | x, y_<j) including the end-of-sequence token, is one
teacher-forced forward pass per string; the mass outside the support, 1 − Σ_{y∈S} p_θ(y|x), is everything else the
model can sample (invalid answers, unfinished ones). No sampling: the measures below are exact for the model.
"""
from __future__ import annotations

import torch


def support_measures(model_logps: torch.Tensor, data_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-prompt exact measures of p_θ(·|x) against p_data(·|x) on p_data's support S(x).

        valid = Σ_{y∈S} p_θ(y|x)                                   the probability that a sample is valid
        tv    = ½ Σ_{y∈S} |p_θ(y|x) − p_data(y|x)| + ½ (1 − valid)  total variation over all strings
        kl    = Σ_{y∈S} p_data(y|x) log(p_data(y|x) / p_θ(y|x))      KL(p_data ‖ p_θ), nats (what SFT minimises)

    Args:
        model_logps: (P, K) log p_θ(y_k|x_p), summed over response tokens incl. eos; padding columns any value.
        data_probs: (P, K) p_data(y_k|x_p); 0 on padding columns (they then count nowhere); rows sum to 1.
    Returns:
        {"valid", "tv", "kl"}: (P,) each, float64.
    """
    logp = model_logps.double()  # (P, K)
    data = data_probs.double()  # (P, K)
    present = data > 0  # (P, K)
    model = torch.where(present, logp.exp(), torch.zeros_like(logp))  # (P, K)
    valid = model.sum(-1)  # (P,)
    tv = 0.5 * (model - data).abs().sum(-1) + 0.5 * (1 - valid).clamp(min=0)  # (P,)
    terms = torch.where(present, data * (data.clamp(min=1e-300).log() - logp), torch.zeros_like(logp))  # (P, K)
    return {"valid": valid, "tv": tv, "kl": terms.sum(-1)}
