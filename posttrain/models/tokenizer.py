"""The repo's own character-level tokenizer: a real PreTrainedTokenizerFast, so it saves and loads like any HF
tokenizer.

One token per character of printable ASCII plus newline; anything else maps to <unk>.
No network and no training: the vocabulary is fixed, so every tiny model built with it agrees on ids.
"""
from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
CHARACTERS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # 96 printable characters incl. space and \n
# Qwen2/2.5-VL's vision tokens, spelled as in the real checkpoints so their prompts read the same.
QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def build_char_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Character-level tokenizer with <pad>=0, <bos>=1, <eos>=2, <unk>=3, then one id per character."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    # Split every character into its own pre-token; special tokens are matched before this runs.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # concatenate characters back without separators
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=model_max_length, padding_side="right", **SPECIAL_TOKENS
    )
    return tokenizer


def build_vision_char_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """The character tokenizer plus Qwen's vision tokens as special tokens (ids 100..103, after the characters)."""
    tokenizer = build_char_tokenizer(model_max_length)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_VISION_TOKENS})
    return tokenizer
