"""Model and tokenizer builders named by `conf/model/*.yaml` through Hydra's `_target_`.

Each returns `(model, tokenizer)`: the tiny random-init default, or any causal LM from a local directory or the Hub.
"""
from __future__ import annotations

import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.utils.config import ConfigError, check

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(dtype: str) -> torch.dtype:
    check(dtype in DTYPES, "model.dtype", f"must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def tiny_llama(
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 256,
    seed: int = 0,
    name_or_path: str | None = None,
    fused_lm_head: bool = False,
    dtype: str = "float32",
):
    """A small Llama with seeded random init over the repo's character tokenizer (no files, no network), its
    parameters in `dtype` (the same initial values, rounded, whatever the dtype).

    `name_or_path`, when given, loads a saved model and tokenizer instead (e.g. a warm-up stage's output), in `dtype`.
    """
    check_dtype(dtype)
    if name_or_path:
        return from_pretrained(name_or_path, dtype=dtype, fused_lm_head=fused_lm_head)
    check(hidden_size % num_heads == 0, "model.hidden_size", f"must be divisible by model.num_heads={num_heads}")
    tokenizer = build_char_tokenizer(model_max_length=max_position_embeddings)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    config.fused_lm_head = fused_lm_head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(DTYPES[dtype]), tokenizer


def from_pretrained(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False,
                    fused_lm_head: bool = False):
    """Any `AutoModelForCausalLM` with its tokenizer; a missing pad token falls back to eos (or a new <pad>).

    `fused_lm_head` computes label log-probs from the decoder's hidden states with the chunked lm-head op instead of
    materialising the logits; only for models whose logits are a plain bias-free projection of the last hidden state.
    """
    check_dtype(dtype)
    if not name_or_path:
        raise ConfigError("model.name_or_path: required for model=hf (a local directory or a Hub id)")
    local = os.path.isdir(name_or_path)
    if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"model.name_or_path: {name_or_path!r} is not a directory and HF_HUB_OFFLINE=1")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
    )
    if fused_lm_head:
        check_fusable_head(model)
        model.config.fused_lm_head = True
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def check_fusable_head(model: PreTrainedModel, key: str = "model.fused_lm_head") -> None:
    """ConfigError naming `key` unless the model's logits are hidden @ lm_head.weight.T (tied weights are fine)."""
    head = model.get_output_embeddings()
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    softcap = getattr(model.config, "final_logit_softcapping", None) or getattr(text, "final_logit_softcapping", None)
    check(isinstance(head, torch.nn.Linear) and head.bias is None and not softcap, key,
          "needs logits = hidden @ lm_head.weight.T (a linear head without bias, no logit soft-capping)")


def ensure_pad_token(model: PreTrainedModel, tokenizer) -> None:
    """A missing pad token falls back to eos, or to a new <pad> (the embeddings grow by one row)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            model.resize_token_embeddings(len(tokenizer))


def save(model: PreTrainedModel, tokenizer, directory: str) -> None:
    """Writes a directory that `from_pretrained` (and `model=hf model.name_or_path=...`) loads back.

    `tokenizer` may also be a processor (a VLM builder's second output): it writes the tokenizer and the image
    processor, which `posttrain.models.vlm.vlm_from_pretrained` loads back.
    """
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
