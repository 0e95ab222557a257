"""Blackjack with Gymnasium's Blackjack-v1 rules, seen as RL4VLM's gym_cards shows it: the dealer's visible card and
every card of the player, drawn on an image (and as text).

The game itself is Gymnasium's `BlackjackEnv` (infinite deck, dealer draws to 17, natural and Sutton-Barto variants
off): this class keeps one and reads its hands. Actions: "stand" (stick: the dealer plays and the game is scored),
"hit" (draw a card; over 21 loses) and "[DONE]", the termination symbol, which ends the hand as "stand" does.

Rewards: `reward` is RL4VLM's r ∈ {+1, 0, −1} for win, draw, loss, 0 on non-terminal steps; `info["gfn_reward"]` is
GFlowVLM's strictly positive R(s_t, a_t) = max(1e-10, (r + 1)·10) ∈ {1e-10, 10, 20} of the step (10 on non-terminal
steps), used per step by DB and SubTB; `reset`'s info has 10, that of a state with nothing decided yet.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.toy_text.blackjack import BlackjackEnv as GymBlackjack
from gymnasium.envs.toy_text.blackjack import sum_hand, usable_ace

from posttrain.envs.render import text_image
from posttrain.utils.config import check

ACTIONS = ("stand", "hit", "[DONE]")
STAND, HIT, DONE = 0, 1, 2
REWARD_FLOOR = 1e-10


def card(value: int) -> str:
    return "A" if value == 1 else str(value)


def gfn_reward(r: float) -> float:
    return max(REWARD_FLOOR, (r + 1.0) * 10.0)


class BlackjackEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}
    actions = ACTIONS

    def __init__(self, max_steps: int = 10, stand_at: int = 17, image_size: int = 64, where: str = "env"):
        check(max_steps >= 1, f"{where}.max_steps", f"must be >= 1, got {max_steps}")
        check(4 <= stand_at <= 21, f"{where}.stand_at", f"must be in [4, 21], got {stand_at}")
        self.game = GymBlackjack()
        self.max_steps, self.stand_at, self.image_size = max_steps, stand_at, image_size
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "text": spaces.Text(96, charset="0123456789A?:,; abcdefghijklmnopqrstuvwxyz"),
        })
        self.render_mode = "rgb_array"
        self.steps, self.last_reward, self.over = 0, 0.0, False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # the game draws from its own generator: seeded from ours, so one seed fixes the whole episode
        self.game.reset(seed=int(self.np_random.integers(2**31)))
        self.steps, self.last_reward, self.over = 0, 0.0, False
        return self.observation(), self.info()

    def step(self, action: int):
        assert self.action_space.contains(action), f"action {action!r} outside {self.action_space}"
        self.steps += 1
        _, reward, terminated, _, _ = self.game.step(HIT if action == HIT else STAND)
        self.last_reward, self.over = float(reward), bool(terminated)
        truncated = not terminated and self.steps >= self.max_steps
        return self.observation(), float(reward), bool(terminated), truncated, self.info()

    def render(self) -> np.ndarray:
        dealer = f"D: {card(self.game.dealer[0])} ?"
        return text_image([dealer, "P: " + " ".join(card(c) for c in self.game.player)], self.image_size)

    def observation(self) -> dict:
        return {"image": self.render(), "text": self.text()}

    def text(self) -> str:
        player = " ".join(card(c) for c in self.game.player)
        return f"dealer {card(self.game.dealer[0])}, player {player}"

    def goal(self) -> str:
        return "beat the dealer without going over 21"

    def admissible(self) -> list[str]:
        return list(ACTIONS)

    def player_sum(self) -> int:
        return int(sum_hand(self.game.player))

    def state_reward(self) -> float:
        return gfn_reward(self.last_reward)

    def success(self) -> bool:
        """A won hand."""
        return self.over and self.last_reward > 0

    def info(self) -> dict:
        return {"gfn_reward": self.state_reward(), "success": self.success(), "player_sum": self.player_sum(),
                "usable_ace": bool(usable_ace(self.game.player))}

    def thought(self) -> str:
        return f"sum {self.player_sum()} dealer {card(self.game.dealer[0])}"

    def expert_action(self) -> int:
        """The fixed rule "stand at >= 17, else hit"; it stands with the termination symbol "[DONE]"."""
        return DONE if self.player_sum() >= self.stand_at else HIT
