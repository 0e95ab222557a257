"""An OpenAI-compatible chat endpoint as an agent (what `vllm serve`, SGLang or TGI expose), through the `openai`
client: retries and timeouts are the client's; conversations of one call go out concurrently."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai

from posttrain.agents.base import ChatModel, ChatReply, cut_at_stop
from posttrain.utils.config import ConfigError, check


class OpenAIChatModel(ChatModel):
    """Args:
        base_url: the server's OpenAI API root, e.g. http://localhost:8000/v1.
        model: the served model's name (as the server lists it).
        api_key: sent as the bearer token (local servers accept any).
        max_retries: the client's retries of a failed request (connection errors, 408/429/5xx), with backoff.
        timeout: seconds per request.
        concurrency: requests in flight at once.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str = "EMPTY",
                 max_retries: int = 2, timeout: float = 60.0, concurrency: int = 8):
        super().__init__()
        check(bool(base_url), "agent.base_url", "required for agent=openai (e.g. http://localhost:8000/v1)")
        check(bool(model), "agent.model", "required for agent=openai (the served model's name)")
        check(max_retries >= 0, "agent.max_retries", f"must be >= 0, got {max_retries}")
        check(timeout > 0, "agent.timeout", f"must be > 0, got {timeout}")
        check(concurrency >= 1, "agent.concurrency", f"must be >= 1, got {concurrency}")
        self.base_url, self.model, self.concurrency = base_url, model, concurrency
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=max_retries,
                                    timeout=timeout)

    def describe(self) -> dict:
        return {**super().describe(), "base_url": self.base_url, "model": self.model}

    def _chat(self, conversations, *, max_new_tokens, temperature, seed, stop):
        def one(i: int) -> ChatReply:
            return self._one(conversations[i], max_new_tokens, temperature, None if seed is None else seed + i, stop)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(one, range(len(conversations))))

    def _one(self, messages, max_new_tokens, temperature, seed, stop) -> ChatReply:
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                **({"seed": seed} if seed is not None else {}), **({"stop": stop} if stop else {}))
        except openai.APITimeoutError as error:
            return ChatReply("", 0, 0, f"timed out: {error}")
        except openai.APIConnectionError as error:
            raise ConfigError(f"agent.base_url: cannot reach {self.base_url} ({error})") from error
        except openai.APIError as error:  # a status error after the retries, or a body the client cannot read
            return ChatReply("", 0, 0, f"{type(error).__name__}: {error}")
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message is not None else None
        if not isinstance(content, str) or not content:
            return ChatReply("", prompt_tokens, completion_tokens, "empty or missing message content")
        return ChatReply(cut_at_stop(content, stop), prompt_tokens, completion_tokens, None)
