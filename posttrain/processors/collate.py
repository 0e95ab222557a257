"""Collators: raw examples -> the batches every method consumes (see `text.py` for the layout of the rows)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from posttrain.processors.text import TextProcessor, left_pad, pack


class SFTCollator:
    """Examples {"prompt", "response", "index", "image"?} -> a training batch; with `with_prompts`, also left-padded
    prompts and the raw examples, which evaluation by generation needs. Image rows add `image_inputs`."""

    def __init__(self, processor: TextProcessor, with_prompts: bool = False):
        self.processor, self.with_prompts = processor, with_prompts

    def __call__(self, examples: Sequence[dict]) -> dict:
        proc = self.processor
        prompts, image_inputs = proc.encode_prompts(examples)
        responses = [proc.response(e["response"]) for e in examples]
        batch = pack(prompts, responses, proc.pad_id, proc.max_length)
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)  # (B,)
        if image_inputs is not None:
            batch["image_inputs"] = image_inputs
        if self.with_prompts:
            batch.update(left_pad(prompts, proc.pad_id))
            batch["examples"] = list(examples)
        return batch


class PairCollator:
    """Examples {"prompt", "chosen", "rejected", "image"?} -> chosen_* and rejected_* batches over the same prompts
    (and the same `image_inputs`), and the raw `examples` (a generative judge builds its own texts from them)."""

    def __init__(self, processor: TextProcessor):
        self.processor = processor

    def __call__(self, examples: Sequence[dict]) -> dict:
        proc = self.processor
        prompts, image_inputs = proc.encode_prompts(examples)
        batch = {"index": torch.tensor([e["index"] for e in examples], dtype=torch.long), "examples": list(examples)}
        if image_inputs is not None:
            batch["image_inputs"] = image_inputs
        for side in ("chosen", "rejected"):
            responses = [proc.response(e[side]) for e in examples]
            packed = pack(prompts, responses, proc.pad_id, proc.max_length)
            batch.update({f"{side}_{k}": v for k, v in packed.items()})
        return batch


def make_processor(tokenizer_or_processor, max_length: int = 256, prompt_template: str = "{prompt}") -> TextProcessor:
    """The data's processor from what a model builder returned: a tokenizer (text models) or a processor (VLMs)."""
    if isinstance(tokenizer_or_processor, TextProcessor):
        return tokenizer_or_processor.configured(max_length, prompt_template)
    return TextProcessor(tokenizer_or_processor, max_length, prompt_template)
