"""PPO for RLHF (Schulman et al. 2017; Ouyang et al. 2022): per-token KL-penalised rewards, GAE, and the clipped
policy and value losses. Used by pairwise PPO (Pairwise-RL, Xu et al. 2025) and the BT-RM PPO baseline, which
differ only in the sequence score and the critic's input.

Every tensor is laid out like a rollout's label positions: (B, T) over a right-padded row, `mask` 1 on the
response tokens (a contiguous run per row, eos included) and 0 on prompt and padding.
"""
from __future__ import annotations

import torch

MAX_LOG_RATIO = 10.0  # log ρ is clamped before exp, so ρ never overflows


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last response token: (B, T) -> (B,) long (0 for a row without one)."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    return (mask.bool() * positions).amax(-1)  # (B,)


def kl_penalized_rewards(logp_old: torch.Tensor, ref_logp: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float) -> torch.Tensor:
    """The per-token reward of PPO-RLHF:

        r_t = − β_KL (log π_old(y_t | q, y_<t) − log π_ref(y_t | q, y_<t)) + 1[t = |y|] · s(q, y)

    with s the sequence score (the reward model's, after its transform) on the last response token only. The KL
    term is the single-sample estimate log π_old/π_ref of the sampled token, as in InstructGPT.

    Args:
        logp_old, ref_logp: (B, T) log-probs of the sampled tokens under the behaviour policy and π_ref.
        scores: (B,) sequence scores.
        mask: (B, T) response tokens.
    Returns:
        (B, T) rewards, 0 off the response.
    """
    mask = mask.to(logp_old.dtype)
    rewards = -kl_coef * (logp_old - ref_logp) * mask  # (B, T)
    last = last_token_index(mask)  # (B,)
    has_response = mask.sum(-1) > 0  # (B,)
    bonus = torch.where(has_response, scores.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))  # (B,)
    return rewards.scatter_add(1, last[:, None], bonus[:, None])  # (B, T)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each row's response tokens:

        δ_t = r_t + γ V_{t+1} − V_t,     V_{|y|+1} = 0 (the episode ends after the last token)
        A_t = δ_t + γ λ A_{t+1},         R̂_t = A_t + V_t (the value target, the λ-return)

    Positions off the response are skipped: the recursion runs over the response tokens only and gives A = R̂ = 0
    elsewhere, so padding and prompt never leak into a return.

    Args:
        rewards, values: (B, T) per-token rewards and the critic's V(state before token t).
        mask: (B, T) response tokens, contiguous per row.
    Returns:
        advantages, returns: (B, T) each, 0 off the response.
    """
    mask = mask.to(values.dtype)
    values = values * mask  # (B, T)
    rewards = rewards * mask  # (B, T)
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        current = (delta + gamma * lam * next_advantage) * mask[:, t]  # (B,)
        advantages[:, t] = current
        # off the response the carried state is reset, so a row's last token sees V = A = 0 after it
        next_value = values[:, t] * mask[:, t]
        next_advantage = current
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the masked entries of the whole batch (population std), 0 off the mask: (B, T)."""
    mask = mask.to(values.dtype)
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / count
    return (values - mean) * torch.rsqrt(var + eps) * mask


def ppo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    value_clip: float | None = 0.2,
    value_coef: float = 0.5,
) -> tuple[torch.Tensor, dict]:
    """The clipped PPO objective of the policy and the clipped value loss of the critic:

        ρ_t     = π_θ(y_t | ·) / π_old(y_t | ·)
        L_π(θ)  = − mean_t min( ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t )
        L_V(ψ)  = ½ mean_t max( (V_ψ,t − R̂_t)², (V_old,t + clip(V_ψ,t − V_old,t, −ε_V, ε_V) − R̂_t)² )
        L       = L_π + c_V · L_V

    Means are over all response tokens of the mini-batch (token-level, as OpenAI's and OpenRLHF's PPO-RLHF). The
    value clip keeps the critic within ε_V of its rollout-time prediction (`value_clip` None: no clip). log ρ is
    clamped at 10 before exp. A and R̂ are constants (computed from the rollout, no gradient).

    Args:
        logp, logp_old: (B, T) log π_θ (with gradient) and log π_old (recorded at sampling).
        advantages, returns: (B, T) GAE advantages (optionally whitened) and value targets.
        values, values_old: (B, T) V_ψ (with gradient) and the critic's prediction at rollout time.
        mask: (B, T) response tokens.
    Returns:
        (loss, metrics): `loss/policy`, `loss/value`, `clip_fraction` (tokens whose clipped branch is the minimum,
        i.e. that carry no policy gradient), `value_clip_fraction`, `approx_kl` (k3 estimate of KL(π_old ‖ π_θ)),
        `value_error` (mean squared error of V_ψ against R̂), `ratio_mean`.
    """
    mask = mask.to(logp.dtype)
    tokens = mask.sum().clamp(min=1)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * mask).sum() / tokens

    log_ratio = (logp - logp_old).clamp(max=MAX_LOG_RATIO)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages  # (B, T)
    policy_loss = -mean(torch.minimum(unclipped, clipped))

    error = (values - returns) ** 2  # (B, T)
    if value_clip is not None:
        values_clipped = values_old + (values - values_old).clamp(-value_clip, value_clip)  # (B, T)
        error_clipped = (values_clipped - returns) ** 2  # (B, T)
        value_loss = 0.5 * mean(torch.maximum(error, error_clipped))
        value_clipped = (error_clipped > error).to(logp.dtype)  # (B, T)
    else:
        value_loss = 0.5 * mean(error)
        value_clipped = torch.zeros_like(error)
    with torch.no_grad():
        metrics = {
            "loss/policy": policy_loss.detach(),
            "loss/value": value_loss.detach(),
            "clip_fraction": mean((clipped < unclipped).to(logp.dtype)),
            "value_clip_fraction": mean(value_clipped),
            "approx_kl": mean(ratio - 1 - log_ratio),
            "value_error": mean(error),
            "ratio_mean": mean(ratio),
        }
    return policy_loss + value_coef * value_loss, metrics


PAIRWISE_TRANSFORMS = ("raw", "centered", "logit")
NORMALIZATIONS = ("none", "batch")


def pairwise_score(win_probability: torch.Tensor, transform: str = "centered", eps: float = 1e-4) -> torch.Tensor:
    """The sequence score of pairwise PPO from r_pair = P̄(y ≻ y* | q) ∈ [0, 1]:

        raw: r_pair        centered: r_pair − ½        logit: log r_pair − log(1 − r_pair)   (r_pair clamped to
                                                                                              [eps, 1 − eps])

    (B,) -> (B,). "centered" puts a tie with the anchor at 0, so the KL penalty is the only reward of a response
    the judge cannot tell from the anchor; "logit" widens the small dynamic range near 0 and 1.
    """
    if transform == "raw":
        return win_probability
    if transform == "centered":
        return win_probability - 0.5
    if transform == "logit":
        p = win_probability.clamp(eps, 1 - eps)
        return torch.log(p) - torch.log1p(-p)
    raise ValueError(f"transform must be one of {PAIRWISE_TRANSFORMS}, got {transform!r}")


def normalize_scores(scores: torch.Tensor, how: str = "batch", eps: float = 1e-6) -> torch.Tensor:
    """A scalar reward model's scores, "none" or "batch"-standardised: (s − mean) / (std + eps) over the rollout
    batch (population std), the usual normalisation of an uncalibrated BT scale. (B,) -> (B,)."""
    if how == "none":
        return scores
    if how == "batch":
        return (scores - scores.mean()) / (scores.std(correction=0) + eps)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {how!r}")
