"""Batched sampling with a KV cache for any HF causal LM: the one rollout path of every online method.

Prompts arrive left-padded, so every row's next token is predicted from the last column. Each step feeds one token
per row through the cache; rows that emitted eos keep feeding padding and are masked out of the result.
The per-token log-probs are those of the distribution actually sampled from (after temperature, top-k and top-p),
which is what importance ratios of off-policy updates need.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch

from posttrain.models.multimodal import forward_kwargs, placeholder_token_ids, prefill_positions, step_positions
from posttrain.utils.config import check


@dataclass
class Generation:
    tokens: torch.Tensor  # (R, L) response tokens, pad after the first eos; R = B * num_samples
    logprobs: torch.Tensor  # (R, L) float32 log-prob of each token under the sampling distribution; 0 on padding
    mask: torch.Tensor  # (R, L) bool, True on response tokens (eos included)
    finished: torch.Tensor  # (R,) bool, the row emitted eos within max_new_tokens

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)  # (R,)

    def token_lists(self) -> list[list[int]]:
        """Each row's response tokens (eos included when emitted), without padding."""
        return [row[m].tolist() for row, m in zip(self.tokens, self.mask)]


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution a sampler with these settings draws from; truncated tokens get probability 0.

    Args:
        logits: (R, V). temperature > 0 (greedy is handled by the caller).
    Returns:
        (R, V) float32, rows summing to 1.
    """
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # (R, V)
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]  # (R, 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)  # (R, V)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)  # (R, V)
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # keep the smallest prefix reaching top_p
        probs = probs.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sampling_logprobs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 1.0) -> torch.Tensor:
    """log of `sampling_probs`: (R, V) float32, -inf on truncated tokens."""
    return sampling_probs(logits, temperature, top_k, top_p).log()


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode (no dropout) inside the block; its previous mode is restored after.

    A model already in eval mode is left alone: `Module.eval()` walks every submodule (about 4 ms for a 12-layer
    tiny Llama on a CPU), which speculative decoding would otherwise pay twice per call."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train(True)


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@torch.no_grad()
def generate(
    model,
    prompt_input_ids: torch.Tensor,
    prompt_attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    image_inputs=None,
) -> Generation:
    """Samples `num_samples` responses per prompt (temperature 0 = greedy).

    Args:
        prompt_input_ids, prompt_attention_mask: (B, P), left-padded.
        generator: the torch.Generator on the model's device that all sampling draws from (seeded => reproducible).
        image_inputs: the prompts' `ImageInputs` for a vision-language model; they enter at the prefill only.
            Image placeholder tokens are never sampled (`posttrain.models.forward.label_logprobs` scores the same
            restricted distribution).
    Returns:
        Generation with R = B * num_samples rows, the samples of prompt i in rows i*n .. i*n+n-1.
    """
    check(max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {max_new_tokens}")
    check(temperature >= 0, "temperature", f"must be >= 0, got {temperature}")
    check(0 < top_p <= 1, "top_p", f"must be in (0, 1], got {top_p}")
    check(num_samples >= 1, "num_samples", f"must be >= 1, got {num_samples}")
    device = prompt_input_ids.device
    input_ids = prompt_input_ids.repeat_interleave(num_samples, dim=0)  # (R, P)
    attention_mask = prompt_attention_mask.repeat_interleave(num_samples, dim=0)  # (R, P)
    rows = input_ids.shape[0]
    if image_inputs is not None:
        image_inputs = image_inputs.repeat_interleave(num_samples)
    text_pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (R, P)
    position_ids, rope_deltas = prefill_positions(model, input_ids, attention_mask, image_inputs)  # (R, P) | (3, R, P)
    step = {**forward_kwargs(model, input_ids, attention_mask, image_inputs), "position_ids": position_ids}
    excluded = placeholder_token_ids(model)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_arg = "cache" if _accepts(model, "cache") else "past_key_values"  # renamed in transformers 5

    tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)  # (R, L)
    logprobs = torch.zeros((rows, max_new_tokens), dtype=torch.float32, device=device)  # (R, L)
    mask = torch.zeros((rows, max_new_tokens), dtype=torch.bool, device=device)  # (R, L)
    alive = torch.ones(rows, dtype=torch.bool, device=device)  # (R,)
    past = None
    prompt_len = attention_mask.shape[1]
    # Every generated column is attended to (finished rows are discarded), so the mask grows by views of one tensor.
    full_mask = torch.cat([attention_mask, attention_mask.new_ones((rows, max_new_tokens))], dim=-1)  # (R, P+L)
    with eval_mode(model):
        for t in range(max_new_tokens):
            out = model(**step, use_cache=True, **{cache_arg: past}, **extra)
            past = out[cache_arg]
            logits = out.logits[:, -1]  # (R, V)
            if excluded:
                logits[:, excluded] = float("-inf")
            if temperature == 0:
                next_ids = logits.argmax(-1)  # (R,)
                next_logps = torch.zeros(rows, device=device)
            else:
                probs = sampling_probs(logits, temperature, top_k, top_p)  # (R, V)
                next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (R,)
                next_logps = probs.gather(-1, next_ids[:, None]).squeeze(-1).log()  # (R,)
            tokens[:, t] = next_ids  # rows already finished are overwritten with padding below
            logprobs[:, t] = next_logps
            mask[:, t] = alive
            if eos_token_id is not None:
                alive = alive & (next_ids != eos_token_id)
            if not alive.any():
                break
            text_pos = text_pos[:, -1:] + 1  # (R, 1)
            step = {"input_ids": tokens[:, t : t + 1],  # (R, 1)
                    "attention_mask": full_mask[:, : prompt_len + t + 1],  # (R, P+t+1)
                    "position_ids": step_positions(text_pos, rope_deltas)}  # (R, 1) | (3, R, 1)
    tokens.masked_fill_(~mask, pad_token_id)
    logprobs.masked_fill_(~mask, 0.0)
    finished = ~alive if eos_token_id is not None else torch.zeros_like(alive)
    return Generation(tokens=tokens, logprobs=logprobs, mask=mask, finished=finished)
