"""Forward passes that turn a packed batch into per-token and per-sequence log-probs of its labels."""
from __future__ import annotations

import torch

from posttrain.models.multimodal import forward_kwargs, last_hidden_states, placeholder_token_ids
from posttrain.ops import lm_head_logprobs, token_logprobs

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


def label_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   image_inputs=None):
    """log p_θ(label_t | tokens_<t) for every position that has a label.

    With `model.config.fused_lm_head` (set by `model.fused_lm_head=true`), the lm-head and the log-softmax run as
    one chunked op on the decoder's hidden states, so the (B, T, V) logits never exist in memory.

    Args:
        input_ids, attention_mask, labels: (B, T); labels are -100 where no loss applies.
        image_inputs: the batch's `ImageInputs` for a vision-language model (None for text).
    Returns:
        logps (B, T-1) float32, 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    if getattr(model.config, "fused_lm_head", False):
        hidden = last_hidden_states(model, input_ids, attention_mask, image_inputs)[:, :-1]  # (B, T-1, H)
        weight = model.get_output_embeddings().weight  # (V, H)
        kept, targets = output_vocabulary(model, weight.shape[0], targets, weight.device)
        weight = weight if kept is None else weight[kept]  # (V', H)
        return lm_head_logprobs(hidden, weight.to(hidden.dtype), targets), mask
    logits = model(**forward_kwargs(model, input_ids, attention_mask, image_inputs), use_cache=False).logits
    logits = logits[:, :-1]  # (B, T-1, V)
    kept, targets = output_vocabulary(model, logits.shape[-1], targets, logits.device)
    logits = logits if kept is None else logits[..., kept]  # (B, T-1, V')
    return token_logprobs(logits, targets), mask


def label_logprobs_and_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                               image_inputs=None):
    """`label_logprobs` plus the entropy H(π_θ(·|tokens_<t)) in nats at every labelled position, from one forward.

    It materialises the (B, T, V) log-softmax (and ignores `fused_lm_head`), so it is meant for evaluation with
    small vocabularies; it is opt-in (`method.evaluator.entropy`).

    Returns:
        logps (B, T-1) float32, entropy (B, T-1) float32, both 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
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
