"""Generative judges: a causal LM answers a question about responses with one verdict token, and its preference is
read from the next-token distribution restricted to the verdict tokens (no scalar head).

Used by the pairwise generative reward model (Pairwise-RL) and by SPARK's self-judging (pointwise Yes/No and
pairwise A/B verdicts of the policy itself).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from posttrain.models.forward import fused_head, head_weight, hidden_states
from posttrain.models.multimodal import forward_kwargs, prefill_positions
from posttrain.processors import TextProcessor, VisionProcessor, left_pad
from posttrain.utils.config import ConfigError

PAIRWISE_TEMPLATE = "{prompt}|A:{a}|B:{b}|>"
PAIRWISE_VERDICTS = ("A", "B")


def verdict_token_ids(tokenizer, verdicts: Sequence[str]) -> list[int]:
    """The id of each verdict string, which must be exactly one token of `tokenizer` (and distinct)."""
    ids = []
    for verdict in verdicts:
        tokens = tokenizer(verdict, add_special_tokens=False).input_ids
        if len(tokens) != 1 or tokens[0] == tokenizer.unk_token_id:
            raise ConfigError(f"verdict {verdict!r} must be a single known token of the tokenizer, got ids {tokens}")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"verdicts {list(verdicts)} map to repeated token ids {ids}")
    return ids


def next_token_logits(model, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor,
                      image_inputs=None) -> torch.Tensor:
    """Logits of the token after each left-padded prompt: (B, P) -> (B, V), with gradient if enabled.

    Positions are the sampler's (`posttrain.generation`): counted from each row's first real token, or for an
    M-RoPE model with `image_inputs` the model's own 3-D positions, so a verdict scored here is the one the model
    would generate.
    """
    inputs = forward_kwargs(model, prompt_input_ids, prompt_attention_mask, image_inputs)
    inputs["position_ids"] = prefill_positions(model, prompt_input_ids, prompt_attention_mask, image_inputs)[0]
    return model(**inputs, use_cache=False).logits[:, -1]  # (B, V)


def verdict_logprobs(model, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor,
                     verdict_ids: Sequence[int], image_inputs=None) -> torch.Tensor:
    """log P(verdict_j | prompt) renormalised over the verdict tokens only: (B, P) -> (B, J) float32.

        P(v_j | ctx) = exp(l_j) / Σ_k exp(l_k),   l = the judge's next-token logits at the verdict ids

    With `model.fused_lm_head=true` the logits are formed for the verdict ids only, from the final hidden states.
    """
    if fused_head(model):  # only the J verdict columns of the head are formed
        positions = prefill_positions(model, prompt_input_ids, prompt_attention_mask, image_inputs)[0]
        hidden = hidden_states(model, prompt_input_ids, prompt_attention_mask, image_inputs, positions)[:, -1]  # (B, H)
        logits = hidden @ head_weight(model, hidden.dtype, list(verdict_ids)).t()  # (B, J)
        return torch.log_softmax(logits.float(), dim=-1)  # (B, J)
    logits = next_token_logits(model, prompt_input_ids, prompt_attention_mask, image_inputs)  # (B, V)
    index = torch.as_tensor(list(verdict_ids), device=logits.device)
    return torch.log_softmax(logits.float()[:, index], dim=-1)  # (B, J)


def encode_prompts(encoder: TextProcessor, texts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """`[bos] text` for each text, left-padded: (B, P) ids and mask on `device`.

    Judge prompts are text built from strings (question, answers); a question about an image would reach the judge
    without it, so an image processor is refused rather than silently judging blind.
    """
    if isinstance(encoder, VisionProcessor):
        raise ConfigError("model: the pairwise and self judges read text-only prompts; judging answers about images "
                          "(a vision-language model's data) is not supported")
    padded = left_pad([encoder.prompt(t) for t in texts], encoder.pad_id)
    return padded["prompt_input_ids"].to(device), padded["prompt_attention_mask"].to(device)


class PairwiseJudge:
    """P(A ≻ B | q) from a generative pairwise reward model, in one order or symmetrised over both.

    Args:
        model: the judge LM (frozen or trainable; gradients flow unless called under no_grad).
        encoder: tokenises judge prompts (its prompt_template wraps the judge text).
        template: judge text with {prompt}, {a}, {b}.
        verdicts: the tokens that mean "A is better" and "B is better".
    """

    def __init__(self, model, encoder: TextProcessor, template: str = PAIRWISE_TEMPLATE,
                 verdicts: Sequence[str] = PAIRWISE_VERDICTS):
        for field in ("{prompt}", "{a}", "{b}"):
            if field not in template:
                raise ConfigError(f"judge template: must contain {field}, got {template!r}")
        if len(verdicts) != 2:
            raise ConfigError(f"judge verdicts: need exactly two (A better, B better), got {list(verdicts)}")
        self.model, self.encoder, self.template = model, encoder, template
        self.verdict_ids = verdict_token_ids(encoder.tokenizer, verdicts)

    def texts(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[str]:
        return [self.template.format(prompt=q, a=x, b=y) for q, x, y in zip(prompts, a, b)]

    def logprobs(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        """(log P(A ≻ B), log P(B ≻ A)) per row: (B, 2), with gradient if enabled."""
        device = next(self.model.parameters()).device
        ids, mask = encode_prompts(self.encoder, self.texts(prompts, a, b), device)
        return verdict_logprobs(self.model, ids, mask, self.verdict_ids)  # (B, 2)

    def probability(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> torch.Tensor:
        """P(A ≻ B | q) with a in slot A: (B,)."""
        return self.logprobs(prompts, a, b)[:, 0].exp()

    def symmetric(self, prompts: Sequence[str], y: Sequence[str], other: Sequence[str]) -> torch.Tensor:
        """P̄(y ≻ y' | q) = ½ [P(A ≻ B; A=y, B=y') + 1 − P(A ≻ B; A=y', B=y)]: (B,), both orders in one batch."""
        n = len(y)
        both = self.probability([*prompts, *prompts], [*y, *other], [*other, *y])  # (2B,)
        return 0.5 * (both[:n] + 1 - both[n:])
