"""Per-token divergences between student and teacher next-token distributions, with the gradient to the student.

With q = softmax(student_logits / T) (the student/draft) and p = softmax(teacher_logits / T) (the teacher/target):
    forward_kl  KL(p || q) = Σ p (log p − log q)
    reverse_kl  KL(q || p) = Σ q (log q − log p)
    jsd         β KL(p || m) + (1 − β) KL(q || m),  m = β p + (1 − β) q
    tvd         Σ |p − q| / 2
0 · log 0 counts as 0. The teacher is a constant: no gradient flows to teacher_logits. No T² factor is applied.
"""
from __future__ import annotations

import math

import torch

from posttrain.ops import _backend
from posttrain.ops import _checks as C

KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")


def _xlogy_diff(w, la, lb):
    """Σ w (la − lb) with terms where w == 0 dropped, safe for autograd through -inf log-probs."""
    zero = w == 0
    la = torch.where(zero, torch.zeros_like(la), la)
    lb = torch.where(zero, torch.zeros_like(lb), lb)
    return (w * (la - lb)).sum(-1)


def token_divergence_reference(student_logits, teacher_logits, kind: str, beta: float = 0.5, temperature: float = 1.0):
    """The specification: (N,) divergence per row, float32 (float64 for float64 inputs)."""
    dt = C.acc_dtype(student_logits.dtype)
    inv_t = 1.0 / temperature
    lq = torch.log_softmax(student_logits.to(dt) * inv_t, dim=-1)  # (N, V)
    lp = torch.log_softmax(teacher_logits.detach().to(dt) * inv_t, dim=-1)  # (N, V)
    q, p = lq.exp(), lp.exp()  # (N, V)
    if kind == "forward_kl":
        return _xlogy_diff(p, lp, lq)
    if kind == "reverse_kl":
        return _xlogy_diff(q, lq, lp)
    if kind == "jsd":
        log_b = math.log(beta) if beta > 0 else float("-inf")
        log_1mb = math.log1p(-beta) if beta < 1 else float("-inf")
        # entries outside both supports would give logaddexp(-inf, -inf), whose gradient is NaN
        outside = (p == 0) & (q == 0)  # (N, V)
        lm = torch.logaddexp(torch.where(outside, 0.0, lp) + log_b,
                             torch.where(outside, 0.0, lq) + log_1mb)  # (N, V) log of the mixture
        return beta * _xlogy_diff(p, lp, lm) + (1 - beta) * _xlogy_diff(q, lq, lm)
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


if _backend.extension() is not None:

    @torch.library.register_fake("posttrain::token_divergence")
    def _fake(student_logits, teacher_logits, kind, beta, temperature):
        dt = C.acc_dtype(student_logits.dtype)
        n = student_logits.shape[:1]
        return tuple(student_logits.new_empty(n, dtype=dt) for _ in range(4))

    @torch.library.register_fake("posttrain::token_divergence_backward")
    def _fake_backward(grad, student_logits, teacher_logits, student_lse, teacher_lse, aux, kind, beta, temperature):
        return torch.empty_like(student_logits, memory_format=torch.contiguous_format)

    def _setup(ctx, inputs, output):
        student, teacher, kind, beta, temperature = inputs
        _, ls, lt, aux = output
        ctx.save_for_backward(student, teacher, ls, lt, aux)
        ctx.args = (kind, beta, temperature)

    def _backward(ctx, grad_div, grad_ls, grad_lt, grad_aux):
        # lse and aux are saved state for the backward, not differentiable outputs (documented in the schema)
        student, teacher, ls, lt, aux = ctx.saved_tensors
        if grad_div is None:
            return None, None, None, None, None
        g = torch.ops.posttrain.token_divergence_backward(grad_div, student, teacher, ls, lt, aux, *ctx.args)
        return g, None, None, None, None

    torch.library.register_autograd("posttrain::token_divergence", _backward, setup_context=_setup)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward_kl",
                     beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Per-token divergence between softmax(teacher/T) = p and softmax(student/T) = q (module docstring).

    Args:
        student_logits: (..., V) float32/bfloat16/float16/float64, differentiable.
        teacher_logits: (..., V) same dtype and shape; treated as a constant.
        kind: "forward_kl" | "reverse_kl" | "jsd" | "tvd".
        beta: JSD mixture weight in [0, 1] (ignored by the other kinds).
        temperature: applied to both logits.
    Returns:
        (...,) float32 (float64 for float64 inputs).
    """
    C.check_float(student_logits, "student_logits")
    C.check_float(teacher_logits, "teacher_logits")
    if teacher_logits.dtype != student_logits.dtype:
        raise TypeError(f"teacher_logits must have the dtype of student_logits ({student_logits.dtype}), "
                        f"got {teacher_logits.dtype}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits {tuple(student_logits.shape)}, "
                         f"got {tuple(teacher_logits.shape)}")
    if student_logits.dim() < 1 or student_logits.shape[-1] == 0:
        raise ValueError(f"student_logits must have a non-empty last dimension, got {tuple(student_logits.shape)}")
    C.check_same_device(teacher_logits, student_logits, "teacher_logits", "student_logits")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (isinstance(beta, (int, float)) and 0 <= beta <= 1):
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    C.check_temperature(temperature)
    lead = student_logits.shape[:-1]
    s = student_logits.reshape(-1, student_logits.shape[-1])  # (N, V)
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])  # (N, V)
    if _backend.use_extension(s.device):
        out = torch.ops.posttrain.token_divergence(s, t.detach(), kind, float(beta), float(temperature))[0]
    else:
        out = token_divergence_reference(s, t, kind, beta, temperature)
    return out.reshape(lead)
