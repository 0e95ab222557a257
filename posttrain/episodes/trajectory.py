"""What an episode leaves: its steps (prompt, observation, answer tokens, parsed action, rewards) and the rewards of
its states, as plain data a replay buffer and a checkpoint keep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class Step:
    prompt: str  # the prompt text (goal, history, state, admissible actions)
    image: np.ndarray | None  # the current observation (H, W, 3) uint8 for a vision-language model, else None
    output: str  # the answer, decoded
    output_ids: list[int]  # its tokens (eos included when emitted)
    action_from: int  # output_ids[:action_from] are thought tokens, the rest the action's (all of an unparsable one)
    done_ids: list[int]  # the same thoughts followed by the action "[DONE]": the answer that terminates here
    done_from: int  # first action token of done_ids
    status: str  # prompts.OK | UNPARSABLE | INADMISSIBLE
    action: str | None  # the admissible action taken; None when the answer was invalid (the env did not move)
    reward: float  # RL4VLM's reward of the step (−1 for an invalid answer)


@dataclass
class Trajectory:
    task: int  # the environment's reset seed: trajectories of one task share z_0 and the goal
    steps: list[Step] = field(default_factory=list)
    # R(z_{0:i}⊤) of the states i = 0..m, m = the number of steps before a final "[DONE]" (that step terminates
    # z_m; its reward is R_m); GFlowVLM's strictly positive rewards
    state_rewards: list[float] = field(default_factory=list)
    done: bool = False  # the last step is the agent's "[DONE]"
    success: bool = False
    expert: bool = False  # an off-policy trajectory of the scripted expert

    @property
    def moves(self) -> list[Step]:
        """The steps that move between states (every step but a final "[DONE]")."""
        return self.steps[:-1] if self.done else self.steps

    @property
    def rl_return(self) -> float:
        return float(sum(s.reward for s in self.steps))

    def signature(self) -> tuple:
        """Thoughts and actions of every step: what makes two successful solutions distinct (Div@N)."""
        return tuple(s.output for s in self.steps)

    def invalid_steps(self) -> int:
        return sum(s.action is None for s in self.steps)

    def to_state(self) -> dict:
        """Plain lists, strings and tensors (a checkpoint loads it with weights_only)."""
        state = asdict(self)
        for step in state["steps"]:
            step["image"] = None if step["image"] is None else torch.from_numpy(np.ascontiguousarray(step["image"]))
        return state

    @classmethod
    def from_state(cls, state: dict) -> Trajectory:
        steps = [Step(**{**s, "image": None if s["image"] is None else np.asarray(s["image"])})
                 for s in state["steps"]]
        return cls(**{**state, "steps": steps})
