"""Per-token log-probabilities of labels: plain, fused with the lm-head, and masked per-sequence sums.

The reference functions here are the specification and the test oracle; `token_logprobs` and
`lm_head_logprobs` dispatch to `torch.ops.posttrain.*` when the extension is in use. Without it, `lm_head_logprobs`
runs the chunked torch version (lm_head_chunked.py), not its materialising reference.
"""
from __future__ import annotations

import torch

from posttrain.ops import _backend
from posttrain.ops import _checks as C
from posttrain.ops.lm_head_chunked import lm_head_logprobs_chunked

# ----------------------------------------------------------------------------------------------- reference


def token_logprobs_reference(logits, labels, ignore_index: int = -100):
    """(logp (N,), lse (N,)): log softmax(logits)[label] (0 on ignored rows) and logsumexp per row."""
    valid = labels != ignore_index  # (N,)
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()  # (N,)
    x = logits.to(C.acc_dtype(logits.dtype))  # (N, V)
    lse = torch.logsumexp(x, dim=-1)  # (N,)
    picked = x.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N,)
    logp = torch.where(valid, picked - lse, torch.zeros_like(lse))  # (N,)
    return logp, lse


def lm_head_logprobs_reference(hidden, weight, labels, ignore_index: int = -100):
    """The spec of the fused op: materialise logits = hidden @ weight.T in the input dtype, then token log-probs."""
    return token_logprobs_reference(hidden @ weight.t(), labels, ignore_index)


# ------------------------------------------------------------------------------------- fake + autograd

if _backend.extension() is not None:

    @torch.library.register_fake("posttrain::token_logprobs")
    def _token_logprobs_fake(logits, labels, ignore_index):
        dt = C.acc_dtype(logits.dtype)
        return logits.new_empty(logits.shape[:1], dtype=dt), logits.new_empty(logits.shape[:1], dtype=dt)

    @torch.library.register_fake("posttrain::token_logprobs_backward")
    def _token_logprobs_backward_fake(grad_logp, grad_lse, logits, labels, lse, ignore_index):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    def _setup(ctx, inputs, output):
        logits, labels, ignore_index = inputs
        ctx.save_for_backward(logits, labels, output[1])
        ctx.ignore_index = ignore_index

    def _backward(ctx, grad_logp, grad_lse):
        logits, labels, lse = ctx.saved_tensors
        grad_logp = torch.zeros_like(lse) if grad_logp is None else grad_logp
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        grad = torch.ops.posttrain.token_logprobs_backward(grad_logp, grad_lse, logits, labels, lse, ctx.ignore_index)
        return grad, None, None

    torch.library.register_autograd("posttrain::token_logprobs", _backward, setup_context=_setup)

    @torch.library.register_fake("posttrain::lm_head_logprobs")
    def _lm_head_fake(hidden, weight, labels, ignore_index, chunk_size):
        dt = C.acc_dtype(hidden.dtype)
        return hidden.new_empty(hidden.shape[:1], dtype=dt), hidden.new_empty(hidden.shape[:1], dtype=dt)

    @torch.library.register_fake("posttrain::lm_head_logprobs_backward")
    def _lm_head_backward_fake(grad_logp, grad_lse, hidden, weight, labels, lse, ignore_index, chunk_size):
        return (torch.empty_like(hidden, memory_format=torch.contiguous_format),
                torch.empty_like(weight, memory_format=torch.contiguous_format))

    def _lm_setup(ctx, inputs, output):
        hidden, weight, labels, ignore_index, chunk_size = inputs
        ctx.save_for_backward(hidden, weight, labels, output[1])
        ctx.ignore_index, ctx.chunk_size = ignore_index, chunk_size

    def _lm_backward(ctx, grad_logp, grad_lse):
        hidden, weight, labels, lse = ctx.saved_tensors
        grad_logp = torch.zeros_like(lse) if grad_logp is None else grad_logp
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        gh, gw = torch.ops.posttrain.lm_head_logprobs_backward(
            grad_logp, grad_lse, hidden, weight, labels, lse, ctx.ignore_index, ctx.chunk_size)
        return gh, gw, None, None, None

    torch.library.register_autograd("posttrain::lm_head_logprobs", _lm_backward, setup_context=_lm_setup)


# ---------------------------------------------------------------------------------------- public API


def _check(logits, labels, ignore_index):
    C.check_float(logits, "logits")
    C.check_index(labels, "labels")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(logits.shape)}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels must have shape {tuple(logits.shape[:-1])} (logits without its last dimension), "
                         f"got {tuple(labels.shape)}")
    C.check_same_device(labels, logits, "labels", "logits")
    C.check_ids_in_range(labels, logits.shape[-1], "labels", ignore_index)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """log softmax(logits)[label] per row, float32 (float64 for float64 logits); rows whose label is ignore_index
    give 0.

    Args:
        logits: (..., V) float32/bfloat16/float16/float64; any strides.
        labels: (...,) int64/int32; ignore_index marks rows without a label.
    Returns:
        (...,) log-probs; differentiable with respect to logits.
    """
    _check(logits, labels, ignore_index)
    lead = labels.shape
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    flat_labels = labels.reshape(-1)  # (N,)
    if _backend.use_extension(flat.device):
        out = torch.ops.posttrain.token_logprobs(flat, flat_labels, ignore_index)[0]
    else:
        out = token_logprobs_reference(flat, flat_labels, ignore_index)[0]
    return out.reshape(lead)


def lm_head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                     chunk_size: int = 0) -> torch.Tensor:
    """token_logprobs(hidden @ weight.T, labels) without materialising the (N, V) logits.

    Args:
        hidden: (..., H) float dtype; weight: (V, H) same dtype; labels: (...,) int.
        chunk_size: vocabulary columns of logits formed at once; 0 picks about 2^20 logits per block.
    Returns:
        (...,) float32 (float64 for float64 inputs); differentiable with respect to hidden and weight.
    """
    C.check_float(hidden, "hidden")
    C.check_float(weight, "weight")
    C.check_index(labels, "labels")
    C.check_dim(weight, 2, "weight")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have the dtype of hidden ({hidden.dtype}), got {weight.dtype}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden must end in weight's hidden size {weight.shape[1]}, got shape {tuple(hidden.shape)}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"labels must have shape {tuple(hidden.shape[:-1])}, got {tuple(labels.shape)}")
    C.check_same_device(weight, hidden, "weight", "hidden")
    C.check_same_device(labels, hidden, "labels", "hidden")
    if not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be a non-negative int, got {chunk_size!r}")
    C.check_ids_in_range(labels, weight.shape[0], "labels", ignore_index)
    lead = labels.shape
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    if _backend.use_extension(h.device):
        out = torch.ops.posttrain.lm_head_logprobs(h, weight, labels.reshape(-1), ignore_index, chunk_size)[0]
    else:
        # the reference would materialise the (N, V) logits: the chunked torch version keeps the memory saving
        out = lm_head_logprobs_chunked(h, weight, labels.reshape(-1), ignore_index, chunk_size)
    return out.reshape(lead)


def sequence_logprob_sums(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t token_logps[b, t] · mask[b, t]: a sequence's log-prob for pairwise (chosen/rejected) losses — a sum, not a
    mean.

    A (B, T) masked reduction already runs at memory speed in torch, so it has no kernel.

    Args:
        token_logps: (B, T) float.
        mask: (B, T) bool or {0, 1} float/int; positions outside the response are 0.
    Returns:
        (B,) in token_logps' dtype.
    """
    C.check_float(token_logps, "token_logps")
    C.check_tensor(mask, "mask")
    if tuple(mask.shape) != tuple(token_logps.shape):
        raise ValueError(f"mask must have the shape of token_logps {tuple(token_logps.shape)}, got {tuple(mask.shape)}")
    C.check_same_device(mask, token_logps, "mask", "token_logps")
    # where() rather than a product, so masked -inf/NaN log-probs (padding) cannot leak into the sum
    return torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps)).sum(-1)  # (B,)
