"""Fused K-candidate token sampling for one-token rollouts (OTR): K tokens per row plus the log-probs a loss needs.

Sampling distribution: softmax(logits / temperature), truncated by top-k (the k largest, ties at the k-th kept) and
then top-p (the smallest prefix of the sorted top-k whose probability reaches top_p, ties at its last value kept),
renormalised. Token = the first v whose cumulative mass exceeds u · total, for u from `uniforms` (inverse CDF).
Returned log-probs are under the **untempered, untruncated** policy log_softmax(logits) (OTR's log π_θ), and
differentiable with respect to logits; the samples themselves are not.
"""
from __future__ import annotations

import torch

from posttrain.ops import _backend
from posttrain.ops import _checks as C


def _truncation_threshold(x, top_k: int, top_p: float):
    """(N, 1) smallest kept tempered logit; -inf keeps all."""
    n, v = x.shape
    thr = torch.full((n, 1), float("-inf"), dtype=x.dtype, device=x.device)
    if top_k <= 0 and top_p >= 1.0:
        return thr
    kept = top_k if 0 < top_k < v else v
    top = x.sort(dim=-1, descending=True).values[:, :kept]  # (N, kept)
    if 0 < top_k < v:
        thr = top[:, -1:]
    if top_p < 1.0:
        w = torch.exp(top.double() - top[:, :1].double())  # (N, kept)
        cum = w.cumsum(-1) / w.sum(-1, keepdim=True)  # (N, kept)
        cut = (cum < top_p).sum(-1, keepdim=True).clamp(max=kept - 1)  # first index reaching top_p
        thr = torch.maximum(thr, top.gather(-1, cut))
    return thr


def sample_k_tokens_reference(logits, labels, uniforms, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                              ignore_index: int = -100):
    """The specification: (samples (N, K) int64, sample_logps (N, K), label_logps (N,), lse (N,))."""
    dt = C.acc_dtype(logits.dtype)
    x = logits.to(dt)  # (N, V)
    with torch.no_grad():
        xt = x * (1.0 / temperature)  # (N, V)
        thr = _truncation_threshold(xt, top_k, top_p)  # (N, 1)
        w = torch.where(xt >= thr, torch.exp(xt - xt.max(-1, keepdim=True).values), 0.0)  # (N, V) unnormalised
        cdf = w.double().cumsum(-1)  # (N, V)
        target = uniforms.double() * cdf[:, -1:]  # (N, K)
        samples = torch.searchsorted(cdf, target.contiguous(), right=True)  # (N, K) first v with cdf(v) > target
        last = (w > 0).long().cumsum(-1).argmax(-1, keepdim=True)  # (N, 1) last kept token
        samples = torch.minimum(samples, last)
    lse = torch.logsumexp(x, -1)  # (N,)
    sample_logps = x.gather(-1, samples) - lse[:, None]  # (N, K)
    valid = labels != ignore_index  # (N,)
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()  # (N,)
    label_logps = torch.where(valid, x.gather(-1, safe[:, None]).squeeze(-1) - lse, torch.zeros_like(lse))  # (N,)
    return samples, sample_logps, label_logps, lse


if _backend.extension() is not None:

    @torch.library.register_fake("posttrain::sample_k_tokens")
    def _fake(logits, labels, uniforms, temperature, top_k, top_p, ignore_index):
        dt = C.acc_dtype(logits.dtype)
        n, k = logits.shape[0], uniforms.shape[1]
        return (logits.new_empty((n, k), dtype=dt), logits.new_empty((n,), dtype=dt),
                logits.new_empty((n,), dtype=dt), logits.new_empty((n, k), dtype=torch.long))

    def _setup(ctx, inputs, output):
        logits, labels, _, _, _, _, ignore_index = inputs
        _, _, lse, samples = output
        ctx.save_for_backward(logits, labels, samples, lse)
        ctx.ignore_index = ignore_index
        ctx.mark_non_differentiable(samples)

    def _backward(ctx, g_sample_logps, g_label_logps, g_lse, _g_samples):
        # d log p(v) / d logits = onehot(v) - softmax, d lse / d logits = softmax; (N, V) is the gradient's own size
        logits, labels, samples, lse = ctx.saved_tensors
        zero_n = torch.zeros_like(lse)
        g_s = torch.zeros_like(samples, dtype=lse.dtype) if g_sample_logps is None else g_sample_logps  # (N, K)
        valid = (labels != ctx.ignore_index).to(lse.dtype)  # (N,)
        g_l = (zero_n if g_label_logps is None else g_label_logps) * valid  # (N,)
        g_z = zero_n if g_lse is None else g_lse  # (N,)
        soft = torch.exp(logits.to(lse.dtype) - lse[:, None])  # (N, V)
        grad = soft * (g_z - g_l - g_s.sum(-1))[:, None]  # (N, V)
        grad.scatter_add_(1, samples, g_s)
        safe = torch.where(labels != ctx.ignore_index, labels, torch.zeros_like(labels)).long()
        grad.scatter_add_(1, safe[:, None], g_l[:, None])
        return grad.to(logits.dtype), None, None, None, None, None, None

    torch.library.register_autograd("posttrain::sample_k_tokens", _backward, setup_context=_setup)


def sample_k_tokens(logits: torch.Tensor, labels: torch.Tensor | None, k: int, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, uniforms: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, ignore_index: int = -100):
    """K tokens per row from the tempered/truncated softmax, with log-probs under log_softmax(logits) (module doc).

    Args:
        logits: (N, V) float32/bfloat16/float16/float64.
        labels: (N,) int or None; ignore_index (or None) gives label_logp 0.
        k: samples per row.
        uniforms: (N, k) float32/float64 in [0, 1); drawn with `generator` when None.
    Returns:
        samples (N, k) int64, sample_logps (N, k), label_logps (N,), lse (N,): float32 (float64 for float64 logits).
    """
    C.check_float(logits, "logits")
    C.check_dim(logits, 2, "logits")
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one vocabulary column")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    C.check_temperature(temperature)
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative int (0 disables it), got {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    n = logits.shape[0]
    if labels is None:
        labels = torch.full((n,), ignore_index, dtype=torch.long, device=logits.device)
    C.check_index(labels, "labels")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    C.check_same_device(labels, logits, "labels", "logits")
    C.check_ids_in_range(labels, logits.shape[1], "labels", ignore_index)
    if uniforms is None:
        uniforms = torch.rand((n, k), generator=generator, dtype=torch.float64, device=logits.device)
    C.check_tensor(uniforms, "uniforms")
    if uniforms.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"uniforms must be float32 or float64, got {uniforms.dtype}")
    if tuple(uniforms.shape) != (n, k):
        raise ValueError(f"uniforms must have shape ({n}, {k}), got {tuple(uniforms.shape)}")
    C.check_same_device(uniforms, logits, "uniforms", "logits")
    if C.can_inspect_values() and uniforms.numel() and not bool(((uniforms >= 0) & (uniforms < 1)).all()):
        raise ValueError("uniforms must lie in [0, 1)")
    if _backend.use_extension(logits.device):
        slp, llp, lse, samples = torch.ops.posttrain.sample_k_tokens(logits, labels, uniforms, float(temperature),
                                                                     top_k, float(top_p), ignore_index)
        return samples, slp, llp, lse
    return sample_k_tokens_reference(logits, labels, uniforms, temperature, top_k, top_p, ignore_index)
