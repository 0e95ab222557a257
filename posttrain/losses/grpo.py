"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300), with the Dr. GRPO
(Liu et al., arXiv 2503.20783) variants of advantage scaling and loss aggregation."""
from __future__ import annotations

import torch

AGGREGATIONS = ("token-sum", "seq-mean")
MAX_LOG_RATIO = 10.0


def grpo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    aggregation: str = "token-sum",
    normalizer: float = 1000.0,
    clip_eps_high: float | None = None,
    dual_clip: float | None = None,
    kl_clamp: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate with group-normalised advantages and an optional KL to a reference:

        L(θ) = − Σ_i Σ_t [ min( R_it A_i, clip(R_it, 1 − ε, 1 + ε) A_i ) − β D_it ] / N
        R_it = π_θ(o_it | q, o_i<t) / π_old(o_it | q, o_i<t)
        D_it = π_ref/π_θ − log(π_ref/π_θ) − 1           (the paper's unbiased KL estimator, per token)

    with A_i computed per group by `posttrain.rollouts.group_advantages` ((r_i − mean)/std for GRPO, r_i − mean for
    Dr. GRPO). Aggregation "seq-mean" is GRPO's (1/G) Σ_i (1/|o_i|) Σ_t; "token-sum" divides the token sum by the
    constant C = `normalizer` (Dr. GRPO / the NFT paper's reduction, no per-sequence length normalisation).
    The log-ratio is clamped at 10 before exp.

    Options (defaults: the plain objective above), as in DAPO / EasyR1 and the LLaVA-Critic-R1 runs:

        clip_eps_high = ε_high: asymmetric clip, clip(R, 1 − ε, 1 + ε_high) ("clip-higher").
        dual_clip = c > 1: for A < 0 the per-token term is max(min(R A, clip(R) A), c A), so a token whose
            ratio has grown far past 1 contributes at most c·|A| (and no gradient) instead of an unbounded R·|A|.
        kl_clamp = m: D_it is clamped to [−m, m] before it enters the loss.

    Args:
        logp, logp_old: (B, T) log π_θ (with gradient) and log π_old (recorded at sampling) of the response tokens.
        advantages: (B,) one advantage per response.
        mask: (B, T) 1 on response tokens.
        ref_logp: (B, T) log π_ref, required when kl_coef > 0.
        clip_eps_high, dual_clip, kl_clamp: the options above; None = off (ε_high = ε).
    Returns:
        (loss, metrics): the policy-gradient and KL parts, mean ratio, `clip_fraction` (tokens where the clipped
        branch is the minimum, i.e. the token carries no gradient).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]  # (B, 1)
    ratio = torch.exp((logp - logp_old).clamp(max=MAX_LOG_RATIO))  # (B, T)
    unclipped = ratio * adv  # (B, T)
    clipped = ratio.clamp(1 - clip_eps, 1 + high) * adv  # (B, T)
    surrogate = torch.minimum(unclipped, clipped)  # (B, T)
    if dual_clip is not None:
        surrogate = torch.where(adv < 0, torch.maximum(surrogate, dual_clip * adv), surrogate)  # (B, T)
    per_token = -surrogate  # (B, T)
    kl = torch.zeros_like(per_token)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("ref_logp is required when kl_coef > 0")
        log_ref_ratio = ref_logp - logp  # (B, T)
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # (B, T)
        if kl_clamp is not None:
            kl = kl.clamp(-kl_clamp, kl_clamp)

    def reduce(values):
        if aggregation == "token-sum":
            return (values * mask).sum() / normalizer
        return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()

    pg_part, kl_part = reduce(per_token), kl_coef * reduce(kl)
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        metrics = {
            "loss/policy": pg_part.detach(),
            "loss/kl": kl_part.detach(),
            "kl": (kl * mask).sum() / tokens,
            "ratio_mean": (ratio * mask).sum() / tokens,
            "clip_fraction": ((clipped < unclipped).to(logp.dtype) * mask).sum() / tokens,
        }
        if dual_clip is not None:  # tokens where the dual bound c·A is the surrogate
            dual = (surrogate > torch.minimum(unclipped, clipped)).to(logp.dtype)  # (B, T)
            metrics["dual_clip_fraction"] = (dual * mask).sum() / tokens
    return pg_part + kl_part, metrics
