"""Whole-vocabulary functions of the lm-head's logits, computed a block of rows (tokens) at a time.

`lm_head_logprobs` needs only the label column of each row, so it chunks over the vocabulary. A divergence between
two distributions, sampling from the softmax or its entropy need each row's whole distribution; these chunk over
rows instead: logits = hidden[rows] @ weight.T exist for one block of rows at a time, in the forward and again in
the backward (which recomputes each block, as activation checkpointing does), so the (N, V) logits never exist.
The result and the gradients equal those of the same function applied to the materialised logits.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from posttrain.ops.lm_head_chunked import _no_autocast
from posttrain.ops.token_divergence import KINDS, token_divergence
from posttrain.ops.token_sampling import sample_k_tokens

_BLOCK_LOGITS = 1 << 24  # logits per block when rows = 0: 64 MiB in float32


def block_rows(n_rows: int, vocab: int, rows: int) -> int:
    if rows > 0:
        return max(1, min(rows, n_rows))
    return max(1, min(n_rows, _BLOCK_LOGITS // max(vocab, 1)))


class RowBlocks(torch.autograd.Function):
    """fn(hidden block (C, H), weight (V, H), *row-arg blocks) -> a tuple of (C, ...) tensors, over all rows."""

    @staticmethod
    def forward(ctx, fn, rows, hidden, weight, *row_args):
        with torch.no_grad():
            parts = [fn(hidden[s:s + rows], weight, *(a[s:s + rows] for a in row_args))
                     for s in range(0, hidden.shape[0], rows)]
        outputs = tuple(torch.cat(column) for column in zip(*parts))
        ctx.save_for_backward(hidden, weight, *row_args)
        ctx.fn, ctx.rows = fn, rows
        ctx.mark_non_differentiable(*(o for o in outputs if not o.is_floating_point()))
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        hidden, weight, *row_args = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        # accumulated in float32 over the blocks, whatever the parameters' dtype
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        grad_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_hidden else None  # (N, H)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None  # (V, H)
        for s in range(0, hidden.shape[0], ctx.rows):
            with torch.enable_grad():
                h = hidden[s:s + ctx.rows].detach().requires_grad_(need_hidden)  # (C, H)
                w = weight.detach().requires_grad_(need_weight)  # (V, H)
                outputs = ctx.fn(h, w, *(a[s:s + ctx.rows] for a in row_args))
                pairs = [(o, g[s:s + ctx.rows]) for o, g in zip(outputs, grads)
                         if g is not None and o.requires_grad]
                inputs = [x for x, need in ((h, need_hidden), (w, need_weight)) if need]
                if not pairs or not inputs:
                    continue
                found = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
            found = iter(found)
            if need_hidden:
                block = next(found)
                if block is not None:
                    grad_hidden[s:s + ctx.rows] += block
            if need_weight:
                block = next(found)
                if block is not None:
                    grad_weight += block
        grad_hidden = None if grad_hidden is None else grad_hidden.to(hidden.dtype)
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return None, None, grad_hidden, grad_weight, *([None] * len(row_args))


def lm_head_rows(fn: Callable, hidden: torch.Tensor, weight: torch.Tensor, *row_args: torch.Tensor,
                 rows: int = 0) -> tuple[torch.Tensor, ...]:
    """fn(hidden[b], weight, *(a[b] for a in row_args)) over blocks b of `rows` rows (0: about 2^24 logits a block),
    concatenated; differentiable with respect to hidden and weight (row_args are constants).

    `fn` forms the block's logits itself (`block_logits`) and must be deterministic: the backward calls it again.
    Args:
        hidden: (N, H); weight: (V, H); row_args: tensors with N leading rows (no gradient flows to them).
    """
    for i, arg in enumerate(row_args):
        if arg.requires_grad:
            raise ValueError(f"row_args[{i}] must not require grad (it is a constant of the blocks)")
        if arg.shape[0] != hidden.shape[0]:
            raise ValueError(f"row_args[{i}] must have {hidden.shape[0]} rows, got shape {tuple(arg.shape)}")
    if hidden.shape[0] == 0:
        return fn(hidden, weight, *row_args)
    return RowBlocks.apply(fn, block_rows(hidden.shape[0], weight.shape[0], rows), hidden, weight, *row_args)


def block_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(C, V) logits / T in the inputs' dtype whatever autocast is active (the recomputation must match)."""
    with _no_autocast(hidden.device):
        logits = hidden @ weight.t()  # (C, V)
    return logits if temperature == 1.0 else logits / temperature


def lm_head_divergence(hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                       teacher_weight: torch.Tensor, kind: str = "forward_kl", beta: float = 0.5,
                       temperature: float = 1.0, rows: int = 0) -> torch.Tensor:
    """token_divergence(hidden @ weight.T, teacher_hidden @ teacher_weight.T, kind, beta, temperature) per row,
    with only a block of rows of both logits alive at a time.

    Args:
        hidden: (N, H) the student's final hidden states; weight: (V, H) its lm-head, same dtype.
        teacher_hidden: (N, H_t); teacher_weight: (V, H_t): the teacher's, constants.
    Returns:
        (N,) float32 (float64 for float64 inputs); the gradient flows to hidden and weight only.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    teacher_weight = teacher_weight.detach().to(hidden.dtype)
    teacher_hidden = teacher_hidden.detach().to(hidden.dtype)

    def divergence(h, w, th):
        return (token_divergence(block_logits(h, w), block_logits(th, teacher_weight), kind, beta, temperature),)

    return lm_head_rows(divergence, hidden, weight, teacher_hidden, rows=rows)[0]


def lm_head_sample_k(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, uniforms: torch.Tensor,
                     temperature: float = 1.0, rows: int = 0):
    """sample_k_tokens(hidden @ weight.T, labels, K, temperature, uniforms=uniforms) a block of rows at a time.

    Returns:
        samples (N, K) int64, sample_logps (N, K), label_logps (N,): the log-probs under the untempered softmax,
        differentiable with respect to hidden and weight.
    """
    k = uniforms.shape[1]

    def sample(h, w, y, u):
        samples, sample_logps, label_logps, _ = sample_k_tokens(block_logits(h, w), y, k, temperature, uniforms=u)
        return samples, sample_logps, label_logps

    return lm_head_rows(sample, hidden, weight, labels, uniforms, rows=rows)


def lm_head_entropy(hidden: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0,
                    rows: int = 0) -> torch.Tensor:
    """H(softmax(hidden @ weight.T / T)) per row in nats, float32: (N,). Differentiable like the others."""

    def entropy(h, w):
        logp = torch.log_softmax(block_logits(h, w, temperature).float(), -1)  # (C, V)
        return (-(logp.exp() * logp).sum(-1),)

    return lm_head_rows(entropy, hidden, weight, rows=rows)[0]
