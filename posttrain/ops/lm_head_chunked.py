"""The fused lm-head log-probs in plain torch ops: the path `lm_head_logprobs` takes without the extension.

Same mathematics as `lm_head_logprobs_reference` (logits = hidden @ weight.T in the input dtype, then
log softmax(logits)[label]), but the logits are formed in vocabulary blocks of (N, C) and merged with an online
log-sum-exp, and the backward recomputes each block, so no (N, V) tensor exists between or inside the passes.
It runs wherever torch runs, which is what keeps the memory saving of `model.fused_lm_head` on devices whose
compiled kernels are not in use (CUDA while they are gated, or a machine without the extension).
"""
from __future__ import annotations

import contextlib

import torch

from posttrain.ops import _checks as C

_BLOCK_LOGITS = 1 << 22  # logits per block when chunk_size = 0: 16 MiB in float32


def block_columns(n_rows: int, vocab: int, chunk_size: int) -> int:
    if chunk_size > 0:
        return min(chunk_size, vocab)
    return max(1, min(vocab, _BLOCK_LOGITS // max(n_rows, 1)))


def _no_autocast(device: torch.device):
    # the op's logits are in the inputs' dtype whatever autocast is active, in the forward and the recomputation
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class ChunkedLMHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index: int, chunk_size: int):
        n, v = hidden.shape[0], weight.shape[0]
        acc = C.acc_dtype(hidden.dtype)
        cols = block_columns(n, v, chunk_size)
        valid = labels != ignore_index  # (N,)
        safe = torch.where(valid, labels, torch.zeros_like(labels)).long()  # (N,)
        lse = torch.full((n,), float("-inf"), dtype=acc, device=hidden.device)  # (N,)
        picked = torch.zeros(n, dtype=acc, device=hidden.device)  # (N,)
        with _no_autocast(hidden.device):
            for start in range(0, v, cols):
                block = (hidden @ weight[start:start + cols].t()).to(acc)  # (N, C)
                lse = torch.logaddexp(lse, torch.logsumexp(block, dim=-1))  # (N,)
                inside = (safe >= start) & (safe < start + block.shape[1])  # (N,)
                col = (safe - start).clamp(0, block.shape[1] - 1)  # (N,)
                picked = torch.where(inside, block.gather(-1, col[:, None]).squeeze(-1), picked)  # (N,)
        ctx.save_for_backward(hidden, weight, safe, valid, lse)
        ctx.cols = cols
        return torch.where(valid, picked - lse, torch.zeros_like(lse))  # (N,)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, safe, valid, lse = ctx.saved_tensors
        acc = lse.dtype
        g = torch.where(valid, grad, torch.zeros_like(grad)).to(acc)  # (N,)
        grad_hidden = torch.zeros(hidden.shape, dtype=acc, device=hidden.device)  # (N, H)
        grad_weight = torch.empty_like(weight)  # (V, H)
        with _no_autocast(hidden.device):
            for start in range(0, weight.shape[0], ctx.cols):
                w = weight[start:start + ctx.cols]  # (C, H)
                # d logp / d logits = onehot(label) - softmax, softmax recomputed from the saved lse
                block = torch.exp((hidden @ w.t()).to(acc) - lse[:, None]).mul_(-g[:, None])  # (N, C)
                inside = (safe >= start) & (safe < start + w.shape[0])  # (N,)
                rows = inside.nonzero().squeeze(-1)  # (M,)
                block[rows, safe[rows] - start] += g[rows]
                block = block.to(hidden.dtype)  # (N, C)
                grad_hidden += (block @ w).to(acc)  # (N, H)
                grad_weight[start:start + w.shape[0]] = block.t() @ hidden  # (C, H)
        return grad_hidden.to(hidden.dtype), grad_weight, None, None, None


def lm_head_logprobs_chunked(hidden, weight, labels, ignore_index: int = -100, chunk_size: int = 0):
    """(N,) log softmax(hidden @ weight.T)[label] (0 on ignored rows), in vocabulary blocks of `chunk_size` columns."""
    return ChunkedLMHead.apply(hidden, weight, labels, ignore_index, chunk_size)
