"""GFlowVLM's replay buffer (the paper's Algorithm 1): the trajectories of each task, its newest `capacity` kept.

A visit of task w adds the K on-policy trajectories just collected and the off-policy ones of the augmentation, and
the update trains on what the task's buffer then holds (paper: capacity 4). Buffers persist across visits and go
into the checkpoint (`state_dict`), so a resumed run trains on the same trajectories.
"""
from __future__ import annotations

from collections import OrderedDict

from posttrain.episodes.trajectory import Trajectory
from posttrain.utils.config import check


class ReplayBuffer:
    def __init__(self, capacity: int = 4):
        check(capacity >= 1, "method.buffer_size", f"must be >= 1, got {capacity}")
        self.capacity = capacity
        self.tasks: OrderedDict[int, list[Trajectory]] = OrderedDict()

    def add(self, task: int, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Appends to task's buffer, drops its oldest beyond capacity; returns what the task's buffer holds."""
        kept = (self.tasks.get(task, []) + list(trajectories))[-self.capacity:]
        self.tasks[task] = kept
        return kept

    def __len__(self) -> int:
        return sum(len(v) for v in self.tasks.values())

    def state_dict(self) -> dict:
        return {"capacity": self.capacity,
                "tasks": [[task, [t.to_state() for t in trajs]] for task, trajs in self.tasks.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.tasks = OrderedDict((int(task), [Trajectory.from_state(t) for t in trajs]) for task, trajs in
                                 state["tasks"])


def needs_augmentation(rule: str, on_policy: list[Trajectory]) -> bool:
    """Whether a task's visit adds the expert's trajectory: "always" (Blackjack: the 17-rule), "on_failure"
    (NumberLine: when an on-policy trajectory did not reach the target) or "none"."""
    if rule == "always":
        return True
    if rule == "on_failure":
        return any(not t.success for t in on_policy)
    return False
