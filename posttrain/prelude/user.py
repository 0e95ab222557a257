"""The simulated PRELUDE user: holds one latent preference per context source and, through a chat model, first
judges the agent's output (yes/no) and, unless it says yes, rewrites it in the preferred style."""
from __future__ import annotations

from dataclasses import dataclass

from posttrain.agents import ChatModel
from posttrain.prelude import prompts
from posttrain.prelude.contexts import Context


@dataclass
class Edit:
    text: str  # y' (= the output when the user was satisfied)
    satisfied: bool
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


class SimulatedUser:
    def __init__(self, chat: ChatModel, preferences: dict[str, str], task: str = "summary",
                 max_new_tokens: int = 256):
        self.chat, self.preferences, self.task, self.max_new_tokens = chat, preferences, task, max_new_tokens

    def preference(self, context: Context) -> str:
        return self.preferences[context.source]

    def edit(self, context: Context, output: str, seed: int) -> Edit:
        preference = self.preference(context)
        verdict = self.ask(prompts.judge(self.task, output, preference), seed, max_new_tokens=8)
        if verdict.error is None and verdict.text.strip().lower().startswith("yes"):
            return Edit(output, True, verdict.prompt_tokens, verdict.completion_tokens)
        revised = self.ask(prompts.rewrite(self.task, context.text, output, preference), seed + 1)
        text = revised.text.strip() if revised.error is None and revised.text.strip() else output
        return Edit(text, False, verdict.prompt_tokens + revised.prompt_tokens,
                    verdict.completion_tokens + revised.completion_tokens, verdict.error or revised.error)

    def ask(self, prompt: str, seed: int, max_new_tokens: int | None = None):
        return self.chat.chat([[{"role": "user", "content": prompt}]], seed=seed,
                              max_new_tokens=max_new_tokens or self.max_new_tokens)[0]
