"""One interface for every chat model a pipeline talks to: a local HF model, an OpenAI-compatible endpoint, or
rule-based agents of a synthetic world.

`chat(conversations, ...)` takes a batch of conversations, each a list of OpenAI-style messages
`{"role": "system" | "user" | "assistant", "content": str}`, and returns one `ChatReply` per conversation. A call
that fails or cannot be parsed is recorded in `ChatReply.error` (and counted in `usage`), never raised: a pipeline
over thousands of prompts must survive one bad reply. Configuration problems (a missing chat template, an
unreachable endpoint) are raised as ConfigError naming the key.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

from posttrain.utils.config import check

ROLES = ("system", "user", "assistant")


@dataclass
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # why the call failed or its reply was unusable; text is "" then (or what came back)


@dataclass
class Usage:
    """Running totals over every call of one chat model."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # conversations answered (one per reply)
    errors: int = 0  # replies with an error

    def add(self, reply: ChatReply) -> None:
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.calls += 1
        self.errors += reply.error is not None

    def as_dict(self) -> dict:
        return asdict(self)


def check_conversations(conversations: list[list[dict]]) -> None:
    """Every message a dict with a known role and string content (a programming error otherwise, so raised)."""
    for i, conversation in enumerate(conversations):
        check(len(conversation) > 0, f"conversations[{i}]", "is empty")
        for j, message in enumerate(conversation):
            check(isinstance(message, dict) and message.get("role") in ROLES
                  and isinstance(message.get("content"), str), f"conversations[{i}][{j}]",
                  f"must be {{'role': one of {list(ROLES)}, 'content': str}}, got {message!r}")


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """`text` up to (not including) the earliest stop string, as an endpoint's `stop` parameter does."""
    cut = len(text)
    for s in stop or []:
        position = text.find(s)
        if s and position >= 0:
            cut = min(cut, position)
    return text[:cut]


class ChatModel(ABC):
    """Batched chat completion with seeds and token accounting. Subclasses implement `_chat`; `chat` validates the
    messages and keeps `usage`."""

    def __init__(self):
        self.usage = Usage()

    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int, temperature: float = 0.0,
             seed: int | None = None, stop: list[str] | None = None) -> list[ChatReply]:
        """One reply per conversation, in order.

        Args:
            conversations: each a list of {"role", "content"} messages, ending with the turn to answer.
            max_new_tokens: the most tokens a reply may have.
            temperature: 0 is greedy.
            seed: makes sampling reproducible (conversation i of a call draws from seed-derived randomness).
            stop: strings at which a reply ends (not included in the text).
        """
        check(max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {max_new_tokens}")
        check(temperature >= 0, "temperature", f"must be >= 0, got {temperature}")
        check_conversations(conversations)
        if not conversations:
            return []
        replies = self._chat(conversations, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                             stop=stop)
        for reply in replies:
            self.usage.add(reply)
        return replies

    def describe(self) -> dict:
        """What identifies this chat model's replies (for the cache of a pipeline that resumes from its outputs)."""
        return {"class": type(self).__name__}

    @abstractmethod
    def _chat(self, conversations: list[list[dict]], *, max_new_tokens: int, temperature: float, seed: int | None,
              stop: list[str] | None) -> list[ChatReply]:
        ...
