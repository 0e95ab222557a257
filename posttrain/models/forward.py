"""Forward passes that turn a packed batch into per-token and per-sequence log-probs of its labels."""
from __future__ import annotations

import torch

from posttrain.ops import lm_head_logprobs, token_logprobs

IGNORE_INDEX = -100  # label of positions outside the loss (prompt, padding), as in Hugging Face


def label_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """log p_θ(label_t | tokens_<t) for every position that has a label.

    With `model.config.fused_lm_head` (set by `model.fused_lm_head=true`), the lm-head and the log-softmax run as
    one chunked op on the decoder's hidden states, so the (B, T, V) logits never exist in memory.

    Args:
        input_ids, attention_mask, labels: (B, T); labels are -100 where no loss applies.
    Returns:
        logps (B, T-1) float32, 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    if getattr(model.config, "fused_lm_head", False):
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1]  # (B, T-1, H)
        weight = model.get_output_embeddings().weight  # (V, H)
        return lm_head_logprobs(hidden, weight.to(hidden.dtype), targets), targets != IGNORE_INDEX
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]  # (B, T-1, V)
    return token_logprobs(logits, targets), targets != IGNORE_INDEX


def label_logprobs_and_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """`label_logprobs` plus the entropy H(π_θ(·|tokens_<t)) in nats at every labelled position, from one forward.

    It materialises the (B, T, V) log-softmax (and ignores `fused_lm_head`), so it is meant for evaluation with
    small vocabularies; it is opt-in (`method.evaluation.entropy`).

    Returns:
        logps (B, T-1) float32, entropy (B, T-1) float32, both 0 where masked; mask (B, T-1) bool.
    """
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX  # (B, T-1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]  # (B, T-1, V)
    logp = torch.log_softmax(logits.float(), -1)  # (B, T-1, V)
    logps = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * mask  # (B, T-1)
    entropy = -(logp.exp() * logp).sum(-1) * mask  # (B, T-1)
    return logps, entropy, mask


def sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """Σ_t log p_θ(y_t | x, y_<t) over response tokens: (B,). Sums, not means (DPO-family losses need sums)."""
    logps, mask = label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return (logps * mask).sum(-1)
