"""Context encoders φ behind one interface, `encode(texts) -> (N, D)` L2-normalised rows, and cosine top-k.

- `tfidf`: scikit-learn's TF-IDF, fitted on the run's contexts (unsupervised: no source labels);
- `policy`: the run's model, its last hidden states mean-pooled over the first `max_length` tokens (the paper's
  BERT/MPNet recipe applied to the policy);
- `hf`: any Hugging Face encoder from a local directory (e.g. bert-base-uncased, all-mpnet-base-v2), mean-pooled;
- `random`: a fixed random vector per text (the bad-encoder ablation).
"""
from __future__ import annotations

import os
import zlib
from abc import ABC, abstractmethod

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from posttrain.utils.config import ConfigError, check, check_keys

KINDS = ("tfidf", "policy", "hf", "random")


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class ContextEncoder(ABC):
    def fit(self, texts: list[str]) -> ContextEncoder:
        """Called once with every context of the run before any is encoded (only TF-IDF uses it)."""
        return self

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """(N, D) float rows of unit norm."""


class TfidfEncoder(ContextEncoder):
    def __init__(self, **options):
        self.vectorizer = TfidfVectorizer(**options)

    def fit(self, texts):
        self.vectorizer.fit(texts)
        return self

    def encode(self, texts):
        return normalise(self.vectorizer.transform(texts).toarray())  # (N, V)


class RandomEncoder(ContextEncoder):
    def __init__(self, dim: int = 64, seed: int = 0):
        self.dim, self.seed = dim, seed

    def encode(self, texts):
        rows = [np.random.default_rng([self.seed, zlib.crc32(t.encode())]).standard_normal(self.dim) for t in texts]
        return normalise(np.stack(rows))  # (N, D)


class MeanPoolEncoder(ContextEncoder):
    """Mean of a transformer's last hidden states over the (unpadded) first `max_length` tokens."""

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16):
        self.model, self.tokenizer, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size

    @torch.no_grad()
    def encode(self, texts):
        device = next(self.model.parameters()).device
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=True)
            hidden = out.hidden_states[-1].float()  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())  # (B, H)
        return normalise(np.concatenate(rows))


def hf_encoder(name_or_path: str | None, key: str, max_length: int = 512, batch_size: int = 16) -> MeanPoolEncoder:
    from transformers import AutoModel, AutoTokenizer

    check(bool(name_or_path), key, "required for encoder type 'hf' (a local encoder directory)")
    if not os.path.isdir(name_or_path):
        raise ConfigError(f"{key}: no such directory {name_or_path!r} (an encoder is loaded from a local path)")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModel.from_pretrained(name_or_path).eval()
    return MeanPoolEncoder(model, tokenizer, max_length=max_length, batch_size=batch_size)


def build_encoder(options, where: str, model=None, tokenizer=None) -> ContextEncoder:
    """`{"type": tfidf | policy | hf | random, ...}` as an encoder; `model`/`tokenizer` are the run's (for policy)."""
    options = check_keys(options, ("type", "name_or_path", "max_length", "dim", "seed", "batch_size"), where)
    kind = options.pop("type", "tfidf")
    check(kind in KINDS, f"{where}.type", f"must be one of {list(KINDS)}, got {kind!r}")
    if kind == "tfidf":
        return TfidfEncoder(sublinear_tf=True)
    if kind == "random":
        return RandomEncoder(dim=options.get("dim", 64), seed=options.get("seed", 0))
    size = {k: options[k] for k in ("max_length", "batch_size") if k in options}
    if kind == "hf":
        return hf_encoder(options.get("name_or_path"), f"{where}.name_or_path", **size)
    check(model is not None and tokenizer is not None, f"{where}.type", "'policy' needs the run's model")
    return MeanPoolEncoder(model.eval(), tokenizer, **size)


def top_k(query: np.ndarray, keys: np.ndarray, k: int) -> list[int]:
    """Indices of the min(k, N) keys of highest cosine similarity to `query` (rows are unit vectors), best first;
    ties go to the earlier entry."""
    if len(keys) == 0:
        return []
    scores = keys @ query  # (N,)
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:min(k, len(keys))]]
