"""Speculative-decoding verification (lossless, greedy and DistillSpec's lenient variant).

Conventions:
- `draft_probs` (B, γ, V) are the probabilities the draft actually sampled its tokens from (after its own temperature
  and truncation), used exactly as given: not renormalised, not re-tempered.
- p = softmax(target_logits / temperature) at the γ + 1 positions.
- sample: accept x_i iff u_i · q_i(x_i) < p_i(x_i). lenient: iff u_i · q_i(x_i) < p_i(x_i) / lenience, i.e. the
  lenience function f_lin(p, ε) = p / ε with ε = lenience ∈ (0, 1]; f_sq(p, ε) = p / ε² is lenience = ε².
  greedy: accept iff x_i == argmax p_i (first maximum on ties); temperature and uniforms are not used.
- Acceptance stops at the first rejection n. The extra token is drawn from norm(max(0, p_n − q_n)) (p_n when that is
  all zero, i.e. p == q), or from p_γ after γ acceptances, by inverse CDF with u_γ: the first v whose cumulative
  weight exceeds u_γ · Σ weight. Greedy takes the argmax instead.
- expected_acceptance[b, i] = Σ_v min(q_i(v), f(p_i(v))) for every i (also after a rejection); greedy gives
  1[x_i == argmax p_i].
"""
from __future__ import annotations

import torch

from posttrain.ops import _backend
from posttrain.ops import _checks as C

MODES = ("sample", "greedy", "lenient")


def _draw(weights, u):
    """(B,) inverse-CDF draw from (B, V) non-negative weights with uniforms u (B,)."""
    cdf = weights.double().cumsum(-1)  # (B, V)
    idx = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)  # (B,)
    last = (weights > 0).long().cumsum(-1).argmax(-1)  # (B,) last positive weight
    return torch.minimum(idx, last)


def speculative_verify_reference(draft_tokens, draft_probs, target_logits, uniforms, temperature: float = 1.0,
                                 mode: str = "sample", lenience: float = 1.0):
    """The specification: (tokens (B, γ+1) int64 padded with -1, num_accepted (B,) int64, expected (B, γ))."""
    b, g = draft_tokens.shape
    dt = C.acc_dtype(target_logits.dtype)
    x = target_logits.to(dt)  # (B, γ+1, V)
    tok = draft_tokens.long()  # (B, γ)
    rows = torch.arange(b, device=x.device)
    if mode == "greedy":
        am = x.argmax(-1)  # (B, γ+1)
        accept = tok == am[:, :g]  # (B, γ)
        expected = accept.to(dt)
    else:
        eps = lenience if mode == "lenient" else 1.0
        q = draft_probs.to(dt)  # (B, γ, V)
        p = torch.softmax(x * (1.0 / temperature), dim=-1)  # (B, γ+1, V)
        px = p[:, :g].gather(-1, tok[..., None]).squeeze(-1)  # (B, γ)
        qx = q.gather(-1, tok[..., None]).squeeze(-1)  # (B, γ)
        accept = uniforms[:, :g].to(dt) * qx < px * (1.0 / eps)  # (B, γ)
        expected = torch.minimum(q, p[:, :g] * (1.0 / eps)).sum(-1)  # (B, γ)
    n = accept.long().cumprod(-1).sum(-1)  # (B,) accepted prefix length
    if mode == "greedy":
        extra = am[rows, n]  # (B,)
    else:
        q_pad = torch.cat([q, q.new_zeros((b, 1, q.shape[2]))], dim=1)  # (B, γ+1, V): nothing to subtract at the bonus
        pn = p[rows, n]  # (B, V)
        resid = torch.clamp(pn - q_pad[rows, n], min=0)  # (B, V)
        weights = torch.where((resid.sum(-1) > 0)[:, None], resid, pn)  # (B, V)
        extra = _draw(weights, uniforms[:, g])
    pos = torch.arange(g + 1, device=x.device)  # (γ+1,)
    padded = torch.cat([tok, tok.new_full((b, 1), -1)], dim=1)  # (B, γ+1); slicing tok[:, :1] would be empty at γ = 0
    tokens = torch.where(pos < n[:, None], padded, torch.full_like(padded, -1))  # (B, γ+1)
    tokens[rows, n] = extra
    return tokens, n, expected


if _backend.extension() is not None:

    @torch.library.register_fake("posttrain::speculative_verify")
    def _fake(draft_tokens, draft_probs, target_logits, uniforms, temperature, mode, lenience):
        b, g = draft_tokens.shape
        dt = C.acc_dtype(target_logits.dtype)
        return (target_logits.new_empty((b, g), dtype=dt), draft_tokens.new_empty((b, g + 1), dtype=torch.long),
                draft_tokens.new_empty((b,), dtype=torch.long))


def speculative_verify(draft_tokens: torch.Tensor, draft_probs: torch.Tensor, target_logits: torch.Tensor,
                       uniforms: torch.Tensor | None = None, temperature: float = 1.0, mode: str = "sample",
                       lenience: float = 1.0, generator: torch.Generator | None = None):
    """Verify γ draft tokens per row against the target (module docstring for the exact rule).

    Args:
        draft_tokens: (B, γ) int64/int32 in [0, V).
        draft_probs: (B, γ, V) float; the distribution each draft token was sampled from.
        target_logits: (B, γ+1, V) float; the target's logits at the γ + 1 positions.
        uniforms: (B, γ+1) float32/float64 in [0, 1): u_0..u_{γ-1} for acceptance, u_γ for the extra token;
            drawn with `generator` when None.
        mode: "sample" | "greedy" | "lenient".
        lenience: ε in (0, 1] for mode="lenient" (ignored otherwise).
    Returns:
        tokens (B, γ+1) int64 (accepted draft tokens, then the extra token, then -1), num_accepted (B,) int64,
        expected_acceptance (B, γ) float32 (float64 for float64 target logits). No gradients.
    """
    C.check_index(draft_tokens, "draft_tokens")
    C.check_float(draft_probs, "draft_probs")
    C.check_float(target_logits, "target_logits")
    C.check_dim(draft_tokens, 2, "draft_tokens")
    C.check_dim(draft_probs, 3, "draft_probs")
    C.check_dim(target_logits, 3, "target_logits")
    b, g = draft_tokens.shape
    v = target_logits.shape[2]
    if target_logits.shape[:2] != (b, g + 1):
        raise ValueError(f"target_logits must have shape ({b}, {g + 1}, V), got {tuple(target_logits.shape)}")
    if v == 0:
        raise ValueError("target_logits must have at least one vocabulary column")
    if tuple(draft_probs.shape) != (b, g, v):
        raise ValueError(f"draft_probs must have shape ({b}, {g}, {v}), got {tuple(draft_probs.shape)}")
    C.check_same_device(draft_probs, target_logits, "draft_probs", "target_logits")
    C.check_same_device(draft_tokens, target_logits, "draft_tokens", "target_logits")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "greedy":
        C.check_temperature(temperature)
    if not (isinstance(lenience, (int, float)) and 0 < lenience <= 1):
        raise ValueError(f"lenience must lie in (0, 1], got {lenience!r}")
    C.check_ids_in_range(draft_tokens, v, "draft_tokens")
    if uniforms is None:
        uniforms = torch.rand((b, g + 1), generator=generator, dtype=torch.float64, device=target_logits.device)
    C.check_tensor(uniforms, "uniforms")
    if uniforms.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"uniforms must be float32 or float64, got {uniforms.dtype}")
    if tuple(uniforms.shape) != (b, g + 1):
        raise ValueError(f"uniforms must have shape ({b}, {g + 1}), got {tuple(uniforms.shape)}")
    C.check_same_device(uniforms, target_logits, "uniforms", "target_logits")
    if C.can_inspect_values() and uniforms.numel() and not bool(((uniforms >= 0) & (uniforms < 1)).all()):
        raise ValueError("uniforms must lie in [0, 1)")
    temperature = float(temperature) if mode != "greedy" else 1.0
    if _backend.use_extension(target_logits.device):
        expected, tokens, n = torch.ops.posttrain.speculative_verify(
            draft_tokens, draft_probs, target_logits, uniforms, temperature, mode, float(lenience))
        return tokens, n, expected
    return speculative_verify_reference(draft_tokens, draft_probs, target_logits, uniforms, temperature, mode, lenience)
