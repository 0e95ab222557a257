"""Forward passes that turn a packed batch into per-token and per-sequence log-probs of its labels."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from posttrain.models.multimodal import forward_kwargs, placeholder_token_ids
from posttrain.ops import lm_head_logprobs, token_logprobs
from posttrain.ops.lm_head_rows import lm_head_entropy

IGNORE_INDEX = -100  # label of positions outside the loss (prompt, padding), as in Hugging Face


def output_vocabulary(model, vocab_size: int, targets: torch.Tensor, device):
    """The token ids a policy may emit, and `targets` renumbered into them.

    A VLM's image placeholders are inputs only; the sampler never draws them, so the policy is the softmax over the
    other tokens, and log-probs here must be over that same vocabulary.
    Returns (kept ids (V',) or None when every id is kept, targets (B, T-1)).
    """
    excluded = placeholder_token_ids(model)
    if not excluded:
        return None, targets
    keep = torch.ones(vocab_size, dtype=torch.bool, device=device)  # (V,)
    keep[excluded] = False
    renumber = keep.long().cumsum(0) - 1  # (V,) old id -> new id among kept tokens
    new_targets = torch.where(targets == IGNORE_INDEX, targets, renumber[targets.clamp(min=0)])  # (B, T-1)
    return keep.nonzero().squeeze(-1), new_targets


def fused_head(model) -> bool:
    """Whether `model.fused_lm_head=true` asked for log-probs from hidden states (no (B, T, V) logits)."""
    return bool(getattr(getattr(model, "config", None), "fused_lm_head", False))


@contextmanager
def _identity_head(model):
    head = model.get_output_embeddings()
    model.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs=None,
                  position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The final hidden states the lm-head reads: (B, T, H).

    The model's own forward runs with its lm-head swapped for the identity, so everything the forward does before
    the head happens as in a logits forward: a VLM merges its image features and computes its (M-RoPE) positions,
    and wrappers' hooks on the model (FSDP2's all-gather of the root's parameters) run. `position_ids` replaces the
    positions `forward_kwargs` gives (the judges score prompts at the sampler's positions).
    """
    inputs = forward_kwargs(model, input_ids, attention_mask, image_inputs)
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    with _identity_head(model):
        return model(**inputs, use_cache=False).logits  # (B, T, H): the identity head's output


def head_weight(model, dtype: torch.dtype, rows: list[int] | torch.Tensor | None = None) -> torch.Tensor:
    """The lm-head weight (V, H), or its `rows`, in `dtype` (the hidden states'), differentiable."""
    weight = model.get_output_embeddings().weight  # (V, H)
    if rows is not None:
        weight = weight[torch.as_tensor(rows, device=weight.device)]  # (V', H)
    return weight.to(dtype)


def token_logprobs_from_hidden(model, hidden: torch.Tensor, targets: torch.Tensor,
                               temperature: float = 1.0) -> torch.Tensor:
    """log softmax(hidden @ W.T / T)[target] over the model's output vocabulary, without the (..., V) logits.

    Dividing the logits by T is dividing the hidden states by T.
    Args:
        hidden: (..., H) final hidden states; targets: (...) next-token ids, -100 where no log-prob is wanted.
    Returns:
        (...) float32, 0 where the target is -100.
    """
    weight = head_weight(model, hidden.dtype)  # (V, H)
    kept, targets = output_vocabulary(model, weight.shape[0], targets, weight.device)
    weight = weight if kept is None else weight[kept]  # (V', H)
    hidden = hidden if temperature == 1.0 else hidden / temperature
    return lm_head_logprobs(hidden, weight, targets)


def label_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   image_inputs=None, temperature: float = 1.0):
    """log p_θ(label_t | tokens_<t) under softmax(logits / temperature) for every position that has a label.

    Log-probs are over the model's output vocabulary (`output_vocabulary`). With `model.config.fused_lm_head` (set
    by `model.fused_lm_head=true`), the lm-head and the log-softmax run as one chunked op on the final hidden states
    (`hidden_states`), so the (B, T, V) logits never exist in memory.

    Args:
        input_ids, attention_mask, labels: (B, T); labels are -100 where no loss applies.
        image_inputs: the batch's `ImageInputs` for a vision-language model (None for text).
    Returns:
        logps (B, T-1) float32, 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    if fused_head(model):
        hidden = hidden_states(model, input_ids, attention_mask, image_inputs)[:, :-1]  # (B, T-1, H)
        return token_logprobs_from_hidden(model, hidden, targets, temperature), mask
    logits = model(**forward_kwargs(model, input_ids, attention_mask, image_inputs), use_cache=False).logits
    logits = logits[:, :-1]  # (B, T-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    kept, targets = output_vocabulary(model, logits.shape[-1], targets, logits.device)
    logits = logits if kept is None else logits[..., kept]  # (B, T-1, V')
    return token_logprobs(logits, targets), mask


def label_logprobs_and_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                               image_inputs=None):
    """`label_logprobs` plus the entropy H(π_θ(·|tokens_<t)) in nats at every labelled position, from one forward.

    Without the fused head it materialises the (B, T, V) log-softmax; with it, the entropy is computed a block of
    labelled positions at a time (`lm_head_entropy`). Opt-in for evaluation (`method.evaluator.entropy`).

    Returns:
        logps (B, T-1) float32, entropy (B, T-1) float32, both 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    if fused_head(model):
        hidden = hidden_states(model, input_ids, attention_mask, image_inputs)[:, :-1]  # (B, T-1, H)
        logps = token_logprobs_from_hidden(model, hidden, targets)  # (B, T-1)
        weight = head_weight(model, hidden.dtype)  # (V, H)
        kept, _ = output_vocabulary(model, weight.shape[0], targets, weight.device)
        weight = weight if kept is None else weight[kept]  # (V', H)
        entropy = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)  # (B, T-1)
        entropy[mask] = lm_head_entropy(hidden[mask], weight)  # (N,)
        return logps, entropy, mask
    logits = model(**forward_kwargs(model, input_ids, attention_mask, image_inputs), use_cache=False).logits
    logits = logits[:, :-1]  # (B, T-1, V)
    kept, targets = output_vocabulary(model, logits.shape[-1], targets, logits.device)
    logits = logits if kept is None else logits[..., kept]  # (B, T-1, V')
    logp = torch.log_softmax(logits.float(), -1)  # (B, T-1, V)
    logps = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * mask  # (B, T-1)
    entropy = -(logp.exp() * logp).sum(-1) * mask  # (B, T-1)
    return logps, entropy, mask


def sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """Σ_t log p_θ(y_t | x, y_<t) over response tokens: (B,). Sums, not means (DPO-family losses need sums).
    The batch's `image_inputs`, when present, go to the model."""
    logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                 image_inputs=batch.get("image_inputs"))
    return (logps * mask).sum(-1)
