"""NFT: Negative-aware Fine-Tuning (Chen et al., "Bridging Supervised Learning and Reinforcement Learning in
Math Reasoning", arXiv 2505.18116, ICLR 2026), the token-level loss of paper Eq. 10."""
from __future__ import annotations

import torch

OMEGAS = ("1", "1-r", "grpo")
MAX_LOG_RATIO = 10.0  # log R is clamped before exp, as in the official code, so R never overflows
CLIP_TOLERANCE = 1e-4  # a value counts as clipped below ε − this: R = 1 ± round-off at the first update is not a clip


def straight_through_clamp_min(x: torch.Tensor, minimum: float) -> torch.Tensor:
    """max_v(x, ε) = x + sg[max(x, ε) − x]: the value of max(x, ε) with the gradient of x everywhere."""
    return x + (x.clamp(min=minimum) - x).detach()


def question_weight(r_hat: torch.Tensor, omega: str) -> torch.Tensor:
    """ω(q): "1" (ω = 1, the RFT setting), "1-r" (ω = 1 − r̂, Dr. GRPO-equivalent, the paper's default) or
    "grpo" (ω = sqrt((1 − r̂)/r̂), std-normalised GRPO-equivalent, the official code's `normalize=2`)."""
    if omega == "1":
        return torch.ones_like(r_hat)
    if omega == "1-r":
        return 1 - r_hat
    if omega == "grpo":
        return ((1 - r_hat) / r_hat).sqrt()
    raise ValueError(f"omega must be one of {OMEGAS}, got {omega!r}")


def nft_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    correct: torch.Tensor,
    r_hat: torch.Tensor,
    mask: torch.Tensor,
    eps: float = 1.0,
    omega: str = "1-r",
    neg_weight: float = 1.0,
    r_clamp: tuple[float, float] = (0.02, 0.98),
    normalizer: float = 1000.0,
) -> tuple[torch.Tensor, dict]:
    """The NFT loss (paper Eq. 10) with the implicit negative policy π_θ⁻ = (π_old − r̂ π_θ)/(1 − r̂):

        L(θ) = − Σ_{(q,a,r)} ω(q) Σ_t [ r · log R_θ^t
                                       + (1 − r) · log max_v( (1 − r̂_q R_θ^t) / (1 − r̂_q), ε ) ] / C

        R_θ^t = π_θ(a_t | q, a_<t) / π_old(a_t | q, a_<t),   max_v(x, ε) = x + sg[max(x, ε) − x]

    Positive answers raise their likelihood; negative answers, maximised under the implicit negative policy,
    lower π_θ on their tokens with relative weight r̂/(1 − r̂). The clip bounds the negative token's gradient
    factor by 1/ε and keeps it (straight-through) where a plain clamp would zero it.

    As in the official code: log R is clamped at 10 before exp; r̂ is clamped to `r_clamp` (the formula divides by
    1 − r̂, and the "grpo" weight by r̂); the loss is a sum over all response tokens divided by a constant C
    (`normalizer`), with no per-sequence length normalisation; no clip on the positive side; no KL or entropy term.
    `neg_weight` scales the negative term (1 = NFT; 0 with omega="1" = the paper's RFT). Prompts with r̂ ∈ {0, 1}
    must be dropped by the caller (the paper's dynamic sampling); here they would only be clamped.

    Args:
        logp: (B, T) log π_θ of each response token (with gradient).
        logp_old: (B, T) log π_old of the same tokens, recorded when they were sampled.
        correct: (B,) 1 for a correct answer, 0 for a wrong one.
        r_hat: (B,) the correctness rate r̂_q of each row's prompt (mean reward of its K samples).
        mask: (B, T) 1 on response tokens.
        eps: ε of the negative branch's clip, > 0 (default 1.0).
    Returns:
        (loss, metrics): metrics hold the positive and negative loss parts, the mean ratio over response tokens and
        `clip_fraction`, the fraction of negative tokens whose value was clipped at ε (by more than CLIP_TOLERANCE,
        so float round-off around R = 1 at the first, on-policy update does not count).
    """
    mask = mask.to(logp.dtype)
    correct = correct.to(logp.dtype)[:, None]  # (B, 1)
    r = r_hat.to(logp.dtype).clamp(*r_clamp)[:, None]  # (B, 1)
    ratio = torch.exp((logp - logp_old).clamp(max=MAX_LOG_RATIO))  # (B, T)
    proxy = (1 - r * ratio) / (1 - r)  # (B, T) the implicit negative policy's ratio to π_old
    positive = -torch.log(ratio)  # (B, T) = −(logp − logp_old) where not clamped
    negative = -torch.log(straight_through_clamp_min(proxy, eps))  # (B, T)
    weight = question_weight(r, omega)  # (B, 1)
    pos_part = (weight * correct * positive * mask).sum() / normalizer
    neg_part = neg_weight * (weight * (1 - correct) * negative * mask).sum() / normalizer
    negative_tokens = (1 - correct) * mask  # (B, T)
    with torch.no_grad():
        metrics = {
            "loss/positive": pos_part.detach(),
            "loss/negative": neg_part.detach(),
            "ratio_mean": (ratio * mask).sum() / mask.sum().clamp(min=1),
            "clip_fraction": ((proxy < eps - CLIP_TOLERANCE).to(logp.dtype) * negative_tokens).sum()
            / negative_tokens.sum().clamp(min=1),
        }
    return pos_part + neg_part, metrics
