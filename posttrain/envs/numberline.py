"""NumberLine (RL4VLM's gym_cards): move the current number to the target one step at a time.

The observation shows "Target: x" and "Current: y" (an image, and the same as text); the actions are "+" (y + 1),
"-" (y − 1) and "[DONE]" (end the episode here). Target and start are drawn in [n_min, n_max]; moves never leave
that range. The episode ends on "[DONE]", after `max_steps` steps (truncation; 2·n_max by default, as RL4VLM), or,
with `end_at_target` (RL4VLM's own rule), as soon as y = x. Without it (the default, GFlowVLM's setting) the agent
itself says "[DONE]", so every state can terminate.

Rewards (both every step): `reward` is RL4VLM's, +1 on the move that reaches the target, −1 for a move that does not
bring y closer, 0 otherwise; "[DONE]" scores 0 at the target and −1 elsewhere, so a success returns +1 either way.
`info["gfn_reward"]` is GFlowVLM's strictly positive R(x, y) = c / (|x − y| + 1) of the state after the step (c =
100), the reward of terminating there, R(z_{0:t}⊤); `reset`'s info has that of the first state.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from posttrain.envs.render import text_image
from posttrain.utils.config import check

ACTIONS = ("+", "-", "[DONE]")
DONE = 2


class NumberLineEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    actions = ACTIONS

    def __init__(self, n_min: int = 0, n_max: int = 5, max_steps: int | None = None, max_distance: int | None = None,
                 end_at_target: bool = False, c: float = 100.0, image_size: int = 64, where: str = "env"):
        check(n_min < n_max, f"{where}.n_max", f"must be > n_min={n_min}, got {n_max}")
        check(max_distance is None or max_distance >= 1, f"{where}.max_distance", f"must be >= 1, got {max_distance}")
        check(c > 0, f"{where}.c", f"must be > 0 (rewards must be strictly positive), got {c}")
        self.n_min, self.n_max, self.c, self.image_size = n_min, n_max, c, image_size
        self.max_steps = max_steps if max_steps is not None else 2 * n_max
        check(self.max_steps >= 1, f"{where}.max_steps", f"must be >= 1, got {self.max_steps}")
        self.max_distance, self.end_at_target = max_distance, end_at_target
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "text": spaces.Text(64, charset="0123456789-:,; abcdefghijklmnopqrstuvwxyz"),
        })
        self.render_mode = "rgb_array"
        self.target = self.current = self.steps = 0

    # ---- gymnasium API ---------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(self.n_min, self.n_max + 1))
        low, high = self.n_min, self.n_max
        if self.max_distance is not None:
            low, high = max(low, self.target - self.max_distance), min(high, self.target + self.max_distance)
        starts = [y for y in range(low, high + 1) if y != self.target]  # the agent always has somewhere to go
        self.current = int(starts[self.np_random.integers(len(starts))])
        self.steps = 0
        return self.observation(), self.info()

    def step(self, action: int):
        assert self.action_space.contains(action), f"action {action!r} outside {self.action_space}"
        self.steps += 1
        if action == DONE:
            reward, terminated = (0.0 if self.current == self.target else -1.0), True
        else:
            before = abs(self.target - self.current)
            self.current = min(self.n_max, max(self.n_min, self.current + (1 if action == 0 else -1)))
            after = abs(self.target - self.current)
            reward = 1.0 if after == 0 else (-1.0 if after >= before else 0.0)
            terminated = self.end_at_target and after == 0
        truncated = not terminated and self.steps >= self.max_steps
        return self.observation(), reward, terminated, truncated, self.info()

    def render(self) -> np.ndarray:
        return text_image([f"Target: {self.target}", f"Current: {self.current}"], self.image_size)

    # ---- what an agent reads ---------------------------------------------------------------------------------------
    def observation(self) -> dict:
        return {"image": self.render(), "text": self.text()}

    def text(self) -> str:
        return f"tgt {self.target}, cur {self.current}"

    def goal(self) -> str:
        return "reach the target, then [DONE]"

    def admissible(self) -> list[str]:
        return list(ACTIONS)

    def state_reward(self) -> float:
        """R(x, y) = c / (|x − y| + 1) of the current state."""
        return self.c / (abs(self.target - self.current) + 1)

    def success(self) -> bool:
        return self.current == self.target

    def info(self) -> dict:
        return {"gfn_reward": self.state_reward(), "success": self.success(), "target": self.target,
                "current": self.current}

    def thought(self) -> str:
        """The expert's chain of thought at this state (the template the SFT data teaches)."""
        return f"cur {self.current} tgt {self.target}"

    def expert_action(self) -> int:
        """The shortest path: towards the target, "[DONE]" on it."""
        if self.current == self.target:
            return DONE
        return 0 if self.current < self.target else 1
