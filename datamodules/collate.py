"""Tokenisation and padding shared by every DataModule.

Training sequences are `[bos] prompt response [eos]`, right-padded, with labels -100 on bos, prompt and padding so
only response tokens (and eos) enter the loss. Prompts for generation are `[bos] prompt`, left-padded, so every row's
next token sits in the last column.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from posttrain.models.forward import IGNORE_INDEX


class Encoder:
    """Turns strings into token-id lists the same way for every collator and for generated data."""

    def __init__(self, tokenizer, max_length: int = 256, prompt_template: str = "{prompt}"):
        if "{prompt}" not in prompt_template:
            raise ValueError("data.prompt_template: must contain '{prompt}'")
        self.tokenizer, self.max_length, self.prompt_template = tokenizer, max_length, prompt_template
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id

    def prompt(self, text: str) -> list[int]:
        ids = self.tokenizer(self.prompt_template.format(prompt=text), add_special_tokens=False).input_ids
        return self.bos + ids

    def response(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids + ([self.eos_id] if self.eos_id is not None else [])


def pack(prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int, max_length: int) -> dict:
    """Right-padded `prompt + response` rows with prompt-masked labels.

    Over-long rows lose prompt tokens from the left first, then response tokens from the right.
    Returns input_ids, attention_mask, labels: (B, T) each, T = the longest row; prompt_lengths (B,).
    """
    rows, label_rows, prompt_lengths = [], [], []
    for p, r in zip(prompts, responses):
        r = r[:max_length]
        p = p[max(0, len(p) - (max_length - len(r))) :] if len(p) + len(r) > max_length else p
        rows.append(p + r)
        prompt_lengths.append(len(p))
        label_rows.append([IGNORE_INDEX] * len(p) + r)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (row, lab) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.long)}


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> dict:
    """Left-padded prompts: prompt_input_ids, prompt_attention_mask (B, P)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, P)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
    return {"prompt_input_ids": ids, "prompt_attention_mask": mask}


class SFTCollator:
    """Examples {"prompt", "response", "index"} -> a training batch; with `with_prompts`, also left-padded prompts
    and the raw examples, which evaluation by generation needs."""

    def __init__(self, encoder: Encoder, with_prompts: bool = False):
        self.encoder, self.with_prompts = encoder, with_prompts

    def __call__(self, examples: Sequence[dict]) -> dict:
        prompts = [self.encoder.prompt(e["prompt"]) for e in examples]
        responses = [self.encoder.response(e["response"]) for e in examples]
        batch = pack(prompts, responses, self.encoder.pad_id, self.encoder.max_length)
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)  # (B,)
        if self.with_prompts:
            batch.update(left_pad(prompts, self.encoder.pad_id))
            batch["examples"] = list(examples)
        return batch


class PairCollator:
    """Examples {"prompt", "chosen", "rejected"} -> chosen_* and rejected_* batches over the same prompts, and the raw
    `examples` (a generative judge builds its own texts from them)."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def __call__(self, examples: Sequence[dict]) -> dict:
        prompts = [self.encoder.prompt(e["prompt"]) for e in examples]
        batch = {"index": torch.tensor([e["index"] for e in examples], dtype=torch.long), "examples": list(examples)}
        for side in ("chosen", "rejected"):
            packed = pack(prompts, [self.encoder.response(e[side]) for e in examples], self.encoder.pad_id, self.encoder.max_length)
            batch.update({f"{side}_{k}": v for k, v in packed.items()})
        return batch
