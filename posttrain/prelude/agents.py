"""PRELUDE agents: CIPHER-k and the paper's baselines, all speaking to one chat model through the prompts of
posttrain/prelude/prompts.py.

Each round the interaction calls `act(text, t, seed, hidden)` (the output and the preference it was conditioned
on), lets the user edit, calls `learn(...)` (the preference to store: an LLM inference call when the user edited)
and logs the round; `observe(row)` then updates the agent's state from that logged row alone, without any LLM
call, so replaying a run's log restores the agent exactly (how a killed interaction resumes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posttrain.agents import ChatModel
from posttrain.prelude import prompts
from posttrain.prelude.encoders import ContextEncoder, top_k
from posttrain.utils.config import check, check_choice

KINDS = ("no_learning", "oracle", "explore_exploit", "continual", "icl_edit", "cot_edit", "cipher")


@dataclass
class Act:
    output: str
    preference: str | None  # the preference the output was conditioned on; None: the agent keeps none (ICL-edit)


class PreludeAgent:
    oracle = False

    def __init__(self, llm: ChatModel, task: str = "summary", max_new_tokens: int = 256):
        self.llm, self.task, self.max_new_tokens = llm, task, max_new_tokens

    def call(self, prompt: str, seed: int) -> str:
        reply = self.llm.chat([[{"role": "user", "content": prompt}]], max_new_tokens=self.max_new_tokens,
                              seed=seed)[0]
        return reply.text.strip() if reply.error is None else ""

    def generate(self, text: str, preference: str, seed: int) -> Act:
        return Act(self.call(prompts.task(self.task, text, preference), seed), preference)

    def act(self, text: str, t: int, seed: int, hidden: str | None = None) -> Act:
        return self.generate(text, "", seed)

    def learn(self, text: str, act: Act, edited: str, t: int, seed: int) -> str | None:
        return None

    def observe(self, row: dict) -> None:
        pass


class OracleAgent(PreludeAgent):
    """The user's true preference in the prompt: the lower bound."""

    oracle = True

    def act(self, text, t, seed, hidden=None):
        return self.generate(text, hidden or "", seed)


class ExploreExploitAgent(PreludeAgent):
    """No preference for the first `explore` rounds; then one preference inferred from those rounds' (output, edit)
    pairs, used for every later round whatever the context."""

    def __init__(self, llm, explore: int = 5, **kwargs):
        super().__init__(llm, **kwargs)
        self.explore, self.pairs, self.learned = explore, [], None

    def act(self, text, t, seed, hidden=None):
        if t >= self.explore and self.learned is None and self.pairs:
            self.learned = self.call(prompts.inference(self.task, self.pairs), seed + 1)
        return self.generate(text, self.learned or "", seed)

    def observe(self, row):
        if row["round"] < self.explore:
            self.pairs.append((row["output"], row["edited"]))
        elif row["preference"] and self.learned is None:
            self.learned = row["preference"]


class ContinualAgent(PreludeAgent):
    """Every round, a preference inferred from the last `window` edited rounds' pairs, whatever the context."""

    def __init__(self, llm, window: int = 5, **kwargs):
        super().__init__(llm, **kwargs)
        self.window, self.pairs = window, []

    def act(self, text, t, seed, hidden=None):
        recent = self.pairs[-self.window:]
        preference = self.call(prompts.inference(self.task, recent), seed + 1) if recent else ""
        return self.generate(text, preference, seed)

    def observe(self, row):
        if row["edited"] != row["output"]:
            self.pairs.append((row["output"], row["edited"]))


class Memory:
    """Past contexts' embeddings with a payload each; cosine top-k over them."""

    def __init__(self, encoder: ContextEncoder):
        self.encoder, self.keys, self.values, self.cache = encoder, [], [], {}

    def embed(self, text: str) -> np.ndarray:
        if text not in self.cache:
            self.cache = {text: self.encoder.encode([text])[0]}  # (D,); the current round's, reused by `add`
        return self.cache[text]

    def nearest(self, text: str, k: int) -> list:
        keys = np.stack(self.keys) if self.keys else np.zeros((0, 1))  # (N, D)
        return [self.values[i] for i in top_k(self.embed(text), keys, k)]

    def add(self, text: str, value) -> None:
        self.keys.append(self.embed(text))
        self.values.append(value)


class IclEditAgent(PreludeAgent):
    """ICL-edit-k: the k nearest past contexts' (output, edit) pairs as in-context examples, no explicit
    preference; with `reason` (CoT-edit-k) the model explains the edits before answering."""

    def __init__(self, llm, encoder: ContextEncoder, k: int = 5, reason: bool = False, **kwargs):
        super().__init__(llm, **kwargs)
        self.memory, self.k, self.reason = Memory(encoder), k, reason

    def act(self, text, t, seed, hidden=None):
        pairs = self.memory.nearest(text, self.k)
        if not pairs:
            return Act(self.generate(text, "", seed).output, None)
        reply = self.call(prompts.icl_edit(self.task, text, pairs, reason=self.reason), seed)
        return Act(prompts.answer_of(reply) if self.reason else reply, None)

    def observe(self, row):
        self.memory.add(row["context"], (row["output"], row["edited"]))


class CipherAgent(PreludeAgent):
    """CIPHER-k: retrieve the preferences stored for the k nearest past contexts, aggregate them (k > 1: an LLM
    call asking for the most represented ones), generate with the result; after an edit, infer the preference the
    edit reveals and store it under the context's embedding. On a round without an edit the preference that was
    used is stored (the paper's rule); `store_empty` stores nothing instead (the ablation)."""

    def __init__(self, llm, encoder: ContextEncoder, k: int = 1, store_empty: bool = False, **kwargs):
        super().__init__(llm, **kwargs)
        self.memory, self.k, self.store_empty = Memory(encoder), k, store_empty

    def act(self, text, t, seed, hidden=None):
        retrieved = self.memory.nearest(text, self.k)
        if not retrieved:
            preference = ""
        elif self.k == 1:
            preference = retrieved[0]
        else:
            preference = self.call(prompts.aggregation(self.task, retrieved), seed + 1)
        return self.generate(text, preference, seed)

    def learn(self, text, act, edited, t, seed):
        if edited != act.output:
            return self.call(prompts.inference(self.task, [(act.output, edited)]), seed + 2)
        return "" if self.store_empty else act.preference

    def observe(self, row):
        self.memory.add(row["context"], row["stored"])


def make_agent(spec: dict, where: str, llm: ChatModel, encoder: ContextEncoder | None, task: str,
               max_new_tokens: int) -> PreludeAgent:
    """An agent from `{kind, k, explore, window, store_empty}` (the keys its kind uses)."""
    kind = spec.get("kind")
    check_choice(kind, KINDS, f"{where}.kind")
    common = {"task": task, "max_new_tokens": max_new_tokens}
    if kind in ("icl_edit", "cot_edit", "cipher"):
        k = spec.get("k", 5 if kind != "cipher" else 1)
        check(isinstance(k, int) and k >= 1, f"{where}.k", f"must be an integer >= 1, got {k!r}")
        if kind == "cipher":
            return CipherAgent(llm, encoder, k=k, store_empty=bool(spec.get("store_empty", False)), **common)
        return IclEditAgent(llm, encoder, k=k, reason=kind == "cot_edit", **common)
    if kind == "explore_exploit":
        return ExploreExploitAgent(llm, explore=int(spec.get("explore", 5)), **common)
    if kind == "continual":
        return ContinualAgent(llm, window=int(spec.get("window", 5)), **common)
    return (OracleAgent if kind == "oracle" else PreludeAgent)(llm, **common)
