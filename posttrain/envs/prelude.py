"""PRELUDE as a Gymnasium environment: each step the user presents a context (the observation), the agent answers
with a text (the action), the simulated user edits it and the reward is minus the word-level edit distance.

The episode is one stream of contexts (T rounds). `reset(options={"start": t})` begins at round t, which is how an
interrupted interaction resumes. The source and the user's edit come back in `info`; the hidden preference is
reachable only through `hidden_preference()` (for the oracle baseline and for evaluation).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym
from gymnasium import spaces

from posttrain.prelude.cost import edit_cost
from posttrain.utils.config import check

if TYPE_CHECKING:  # the user's chat models are imported only by who builds one
    from posttrain.prelude.contexts import Context
    from posttrain.prelude.user import SimulatedUser

MAX_CHARS = 1 << 20
GYM_ID = "posttrain/Prelude-v0"  # gymnasium.make(GYM_ID, contexts=..., user=...)


class PreludeEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, contexts: list[Context], user: SimulatedUser, where: str = "env"):
        check(len(contexts) > 0, f"{where}.contexts", "no contexts to present")
        self.contexts, self.user = contexts, user
        self.observation_space = spaces.Dict({"text": spaces.Text(MAX_CHARS)})
        self.action_space = spaces.Text(MAX_CHARS)
        self.round, self.base_seed = 0, 0

    @property
    def context(self) -> Context:
        return self.contexts[self.round]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.base_seed = 0 if seed is None else seed
        self.round = int((options or {}).get("start", 0))
        check(0 <= self.round <= len(self.contexts), "options.start",
              f"must be in [0, {len(self.contexts)}], got {self.round}")
        return self.observation(), {"round": self.round}

    def step(self, action: str):
        context = self.context
        edit = self.user.edit(context, action, seed=self.base_seed * 1_000_003 + 2 * self.round)
        cost = edit_cost(action, edit.text)
        info = {"round": self.round, "source": context.source, "context_id": context.id, "edited": edit.text,
                "cost": cost, "satisfied": edit.satisfied, "user_prompt_tokens": edit.prompt_tokens,
                "user_completion_tokens": edit.completion_tokens, "user_error": edit.error}
        self.round += 1
        terminated = self.round >= len(self.contexts)
        return self.observation(), -float(cost), terminated, False, info

    def observation(self) -> dict:
        return {"text": self.contexts[min(self.round, len(self.contexts) - 1)].text}

    def hidden_preference(self) -> str:
        return self.user.preference(self.context)


if GYM_ID not in gym.registry:  # free text is outside Text's default charset: the passive checker would only warn
    gym.register(GYM_ID, entry_point=PreludeEnv, disable_env_checker=True)
