"""The text processor: strings to token ids, and the padding every batch uses.

Training sequences are `[bos] prompt response [eos]`, right-padded, with labels -100 on bos, prompt and padding so
only response tokens (and eos) enter the loss. Prompts for generation are `[bos] prompt`, left-padded, so every row's
next token sits in the last column.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from posttrain.models.forward import IGNORE_INDEX
from posttrain.utils.config import ConfigError


class TextProcessor:
    """Turns examples into token ids the same way for every collator and for generated data.

    Args:
        tokenizer: any Hugging Face tokenizer.
        max_length: the longest training row (`pack` cuts longer ones).
        prompt_template: wraps each prompt; must contain {prompt}.
    """

    training_padding = "right"  # `pack`: rows start at column 0, so positions are plain column indices
    prompt_padding = "left"  # `left_pad`: every prompt's next token is predicted from the last column

    def __init__(self, tokenizer, max_length: int = 256, prompt_template: str = "{prompt}"):
        if "{prompt}" not in prompt_template:
            raise ConfigError("data.prompt_template: must contain '{prompt}'")
        self.tokenizer, self.max_length, self.prompt_template = tokenizer, max_length, prompt_template
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id

    def configured(self, max_length: int, prompt_template: str) -> "TextProcessor":
        """The same processor with the data's settings."""
        return type(self)(self.tokenizer, max_length, prompt_template)

    def text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt(self, text: str) -> list[int]:
        return self.bos + self.text(self.prompt_template.format(prompt=text))

    def response(self, text: str) -> list[int]:
        return self.text(text) + ([self.eos_id] if self.eos_id is not None else [])

    def encode_prompts(self, examples: Sequence[dict]) -> tuple[list[list[int]], None]:
        """Prompt ids of each example, and its image inputs (none for text)."""
        if any("image" in e for e in examples):
            raise ConfigError("model: the data has images but the model is text-only (use model=vlm_tiny or hf_vlm)")
        return [self.prompt(e["prompt"]) for e in examples], None

    def decode(self, token_lists: Sequence[Sequence[int]]) -> list[str]:
        """Generated token ids back to text, special tokens dropped."""
        return self.tokenizer.batch_decode(token_lists, skip_special_tokens=True)

    # The tokenizer surface a method reads from its `tokenizer` argument, which for a vision-language model is this
    # processor (the model builder's second output): ids of the special tokens, the vocabulary size, decoding.
    @property
    def pad_token_id(self) -> int | None:
        return self.pad_id

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_id

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def __len__(self) -> int:
        return len(self.tokenizer)

    def batch_decode(self, token_lists: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(token_lists, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str) -> None:
        self.tokenizer.save_pretrained(directory)


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
