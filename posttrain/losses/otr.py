"""OTR: One-Token Rollout (Ming et al., 2025, arXiv:2509.26313) — SFT data turned into a one-step policy gradient."""
from __future__ import annotations

import torch

NORMALIZATIONS = ("sequence", "token")


def otr_rewards(samples: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """R(a, y) = 1 if a == y else β, for candidates (..., K) and labels (...)."""
    hit = samples == labels.unsqueeze(-1)  # (..., K)
    return torch.where(hit, 1.0, float(beta))


def _position_weights(mask: torch.Tensor, normalization: str) -> torch.Tensor:
    """(B, T) weight of each position: 1/(B·T_i) per sequence (the paper's 1/T, then the batch mean), or 1/Σm."""
    mask = mask.to(torch.float64 if mask.dtype == torch.float64 else torch.float32)
    if normalization == "sequence":
        lengths = mask.sum(-1, keepdim=True)  # (B, 1)
        rows = (lengths > 0).sum().clamp(min=1)
        return mask / lengths.clamp(min=1) / rows
    if normalization == "token":
        return mask / mask.sum().clamp(min=1)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def otr_loss(sample_logps: torch.Tensor, samples: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
             beta: float = -0.1, normalization: str = "sequence") -> tuple[torch.Tensor, dict]:
    """The sampled (Monte-Carlo) OTR surrogate, a REINFORCE loss over one-token episodes:

        L_OTR(θ) = − E_(x,y) [ (1/T) Σ_t (1/K) Σ_k sg[R(a_tk, y_t)] · log π_θ(a_tk | x, y_<t) ],
        a_tk ~ π'_θ(·|x, y_<t) = softmax(z_t / τ) (detached),   R(a, y) = 1 if a = y else β.

    Grouping equal candidates (c_t(v) = #{k : a_tk = v}) gives the two logged terms,
        hit  = − (1/T) Σ_t (c_t(y_t)/K) · log π_θ(y_t | ·)            (SFT weighted by the hit rate)
        miss = − (1/T) Σ_t β Σ_{v≠y_t} (c_t(v)/K) · log π_θ(v | ·)    (push-down of sampled mistakes for β < 0)
    with L = hit + miss. The ground-truth token enters only through the reward; there is no learned or group
    baseline (the two fixed reward levels play that role). Gradients flow only through log π_θ of the candidates,
    at temperature 1; the candidates and rewards are constants.

    Args:
        sample_logps: (B, T, K) log π_θ(a_tk) under the untempered policy, differentiable.
        samples: (B, T, K) int candidate ids drawn from π'.
        labels: (B, T) int ground-truth next tokens (any value where mask is 0).
        mask: (B, T) 1 on response positions, 0 on prompt and padding.
        beta: reward of a non-matching candidate (< 1; the paper uses a small negative value).
        normalization: "sequence" (the paper: mean over each sequence's T response positions, then over the batch)
            or "token" (mean over all response positions of the batch, as `sft_loss` does).
    Returns:
        loss, and detached metrics: hit/miss terms, mean reward and hit rate over response candidates.
    """
    weights = _position_weights(mask, normalization).to(sample_logps.dtype)  # (B, T)
    rewards = otr_rewards(samples, labels, beta).to(sample_logps.dtype)  # (B, T, K)
    hit = samples == labels.unsqueeze(-1)  # (B, T, K)
    per_candidate = -rewards * sample_logps / samples.shape[-1]  # (B, T, K)
    hit_term = (per_candidate * hit * weights.unsqueeze(-1)).sum()
    miss_term = (per_candidate * ~hit * weights.unsqueeze(-1)).sum()
    loss = hit_term + miss_term
    m = mask.bool().unsqueeze(-1).expand_as(hit)  # (B, T, K)
    count = m.sum().clamp(min=1)
    metrics = {
        "loss/hit": hit_term.detach(),
        "loss/miss": miss_term.detach(),
        "reward": (rewards * m).sum().detach() / count,
        "hit_rate": (hit & m).sum().to(rewards.dtype) / count,
    }
    return loss, metrics


def otr_expected_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, beta: float = -0.1,
                      temperature: float = 1.0, normalization: str = "sequence") -> tuple[torch.Tensor, dict]:
    """The K → ∞ limit of `otr_loss` (the expectation over candidates in closed form):

        L_exp = − E [ (1/T) Σ_t ( π'(y_t) log π_θ(y_t) + β Σ_{v≠y_t} π'(v) log π_θ(v) ) ],  π' = sg[softmax(z/τ)]

    Exact and variance-free; it materialises a (B, T, V) log-softmax, so it suits small vocabularies, tests (the
    oracle of the sampled estimator) and ablations.

    Args:
        logits: (B, T, V) policy logits z_t.
        labels, mask, beta, normalization: as in `otr_loss`.
        temperature: τ of the rollout distribution π'.
    """
    hit, miss, p_label = otr_expected_terms(logits, labels, mask, temperature)  # (B, T) each
    return otr_expected_reduce(hit, miss, p_label, mask, beta, normalization)


def otr_expected_terms(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position of `otr_expected_loss`: π'(y_t) log π_θ(y_t), Σ_{v≠y_t} π'(v) log π_θ(v) and π'(y_t) (no
    gradient), each (...). logits (..., V); labels and mask (...). Position-wise, so it runs on any block of rows."""
    logp = torch.log_softmax(logits, -1)  # (..., V)
    with torch.no_grad():
        rollout = torch.softmax(logits / temperature, -1)  # (..., V)
    safe = torch.where(mask.bool(), labels, torch.zeros_like(labels)).long()  # (...)
    onehot = torch.zeros_like(rollout).scatter_(-1, safe.unsqueeze(-1), 1.0)  # (..., V)
    hit = (rollout * onehot * logp).sum(-1)  # (...)
    miss = (rollout * (1 - onehot) * logp).sum(-1)  # (...)
    return hit, miss, (rollout * onehot).sum(-1)


def otr_expected_reduce(hit: torch.Tensor, miss: torch.Tensor, p_label: torch.Tensor, mask: torch.Tensor,
                        beta: float = -0.1, normalization: str = "sequence") -> tuple[torch.Tensor, dict]:
    """`otr_expected_loss` from its per-position terms (B, T) (`otr_expected_terms`)."""
    weights = _position_weights(mask, normalization).to(hit.dtype)  # (B, T)
    hit_term = -(hit * weights).sum()
    miss_term = -(float(beta) * miss * weights).sum()
    loss = hit_term + miss_term
    m = mask.bool()
    count = m.sum().clamp(min=1)
    p_label = p_label.detach()
    metrics = {
        "loss/hit": hit_term.detach(),
        "loss/miss": miss_term.detach(),
        "reward": ((p_label + float(beta) * (1 - p_label)) * m).sum() / count,
        "hit_rate": (p_label * m).sum() / count,
    }
    return loss, metrics


def rollout_entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean entropy (nats) of the sampling distribution softmax(z/τ) over masked-in positions; no gradient.

    Args:
        logits: (N, V) or (B, T, V); mask: the matching (N,) or (B, T).
    """
    with torch.no_grad():
        logp = torch.log_softmax(logits.float() / temperature, -1)  # (..., V)
        entropy = -(logp.exp() * logp).sum(-1)  # (...)
        m = mask.bool()
        return (entropy * m).sum() / m.sum().clamp(min=1)
