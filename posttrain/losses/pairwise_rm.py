"""Pairwise generative reward model (Pairwise-RL, Xu et al., arXiv 2504.04950): verdict-token cross-entropy."""
from __future__ import annotations

import torch


def pairwise_rm_loss(verdict_logps: torch.Tensor, a_preferred: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy of the judge on the verdict token, restricted to the two verdict tokens:

        P_φ(A ≻ B | q) = exp(l_A) / (exp(l_A) + exp(l_B))
        L_RM(φ) = − E[ z · log P_φ(A ≻ B | q) + (1 − z) · log (1 − P_φ(A ≻ B | q)) ]

    with l_A, l_B the judge's logits for the verdict tokens after ctx(q, y_A, y_B) and z = 1 when A is preferred.
    The restriction to two tokens is the paper's reading of a verdict as a probability (spec §2.2, a
    reconstruction); full-vocabulary cross-entropy differs only by the mass on other tokens.

    Args:
        verdict_logps: (B, 2) log P(A ≻ B), log P(B ≻ A), renormalised over the verdict tokens
            (`posttrain.rewards.judges.verdict_logprobs`).
        a_preferred: (B,) z in {0, 1} (or a soft label in [0, 1]).
    Returns:
        (mean loss, metrics): the judge's accuracy on these rows (P(A ≻ B) > 0.5 when z = 1, < 0.5 when z = 0) and
        the mean probability it gives the preferred response.
    """
    z = a_preferred.to(verdict_logps.dtype)  # (B,)
    losses = -(z * verdict_logps[:, 0] + (1 - z) * verdict_logps[:, 1])  # (B,)
    p_a = verdict_logps[:, 0].detach().exp()  # (B,)
    metrics = {
        "accuracy": ((p_a > 0.5) == (z > 0.5)).float().mean(),
        "prob_preferred": (z * p_a + (1 - z) * (1 - p_a)).mean(),
    }
    return losses.mean(), metrics
