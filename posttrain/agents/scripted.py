"""Rule-based agents: a synthetic world's agents behind the same chat interface as a language model.

A scripted agent reads the conversation (the same prompts a language model gets) and writes its reply by rules,
drawing any noise from a `random.Random` seeded by the call's seed and a fingerprint of the conversation's content
(`conversation_seed`), so a run is reproducible, independent of how conversations are batched, and two different
conversations never replay the same noise. Token counts are whitespace-separated words.
"""
from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod

from posttrain.agents.base import ChatModel, ChatReply, cut_at_stop
from posttrain.utils.config import ConfigError


def conversation_seed(seed: int, messages: list[dict]) -> int:
    """A seed from the call's seed and the conversation's content (not its position in the batch)."""
    digest = hashlib.sha256(json.dumps([seed, messages], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Responder(ABC):
    """The rules of one world's agents: `respond(messages, rng) -> text`. Raising ValueError marks the reply failed
    (recorded, not raised), as a language model's unusable answer would be."""

    @abstractmethod
    def respond(self, messages: list[dict], rng: random.Random) -> str:
        ...


class ScriptedChatModel(ChatModel):
    """Args:
        responder: the world's rules (a `Responder`, or any callable `(messages, rng) -> str`).
        seed: the base seed used when a call passes none.
    """

    def __init__(self, responder=None, seed: int = 0):
        super().__init__()
        if responder is None:
            raise ConfigError("agent.responder: scripted agents need the world's responder (an experiment with "
                              "scripted agents sets `responder`)")
        self.responder, self.seed = responder, seed

    def describe(self) -> dict:
        settings = getattr(self.responder, "probabilities", None)
        return {**super().describe(), "responder": type(self.responder).__name__, "settings": settings,
                "seed": self.seed}

    def _chat(self, conversations, *, max_new_tokens, temperature, seed, stop):
        base = self.seed if seed is None else seed
        return [self._one(messages, random.Random(conversation_seed(base, messages)), max_new_tokens, stop)
                for messages in conversations]

    def _one(self, messages, rng, max_new_tokens, stop) -> ChatReply:
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        respond = self.responder.respond if isinstance(self.responder, Responder) else self.responder
        try:
            text = respond(messages, rng)
        except ValueError as error:
            return ChatReply("", prompt_tokens, 0, f"scripted agent failed: {error}")
        words = cut_at_stop(text, stop).split(" ")
        text = " ".join(words[:max_new_tokens])
        return ChatReply(text, prompt_tokens, len(text.split()), None)
