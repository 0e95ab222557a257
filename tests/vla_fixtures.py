"""Small synthetic robot data for the VLA tests: a demonstrations directory in the demos format, a Gymnasium
reaching environment with the simulator's observation layout, and a grounding QA task."""
from __future__ import annotations

import json
import re

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw

from posttrain.envs import demos
from posttrain.envs.demos import Episode

SIZE = 32


def draw(point: np.ndarray, goal: np.ndarray, size: int = SIZE, zoom: float = 1.0) -> np.ndarray:
    """A white point and a red goal on grey, positions in [-1, 1]² (the wrist view zooms around the point)."""
    image = Image.new("RGB", (size, size), (90, 90, 90))
    canvas = ImageDraw.Draw(image)
    centre = point if zoom != 1.0 else np.zeros(2)
    for pos, colour in ((goal, (220, 40, 40)), (point, (250, 250, 250))):
        x, y = ((pos - centre) * zoom + 1) / 2 * (size - 1)
        canvas.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    return np.asarray(image)


class ToyReachEnv(gym.Env):
    """Move a point to a goal: action (4,) whose first two entries move it (clipped to ±0.2 a step); success within
    0.15 of the goal. Observations: scene and wrist images, state (point, goal, step), instruction."""

    def __init__(self, max_steps: int = 20, where: str = "env"):
        self.max_steps = max_steps
        self.action_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self.observation_space = gym.spaces.Dict({})

    def observation(self) -> dict:
        return {"scene": draw(self.point, self.goal), "wrist": draw(self.point, self.goal, zoom=2.0),
                "state": np.concatenate([self.point, self.goal, [self.t / self.max_steps]]).astype(np.float32),
                "instruction": "move the point to the red goal"}

    def reset(self, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.point, self.goal, self.t = rng.uniform(-0.8, 0.8, 2), rng.uniform(-0.8, 0.8, 2), 0
        return self.observation(), {"success": False, "projections": {}}

    def step(self, action):
        self.point = np.clip(self.point + np.clip(np.asarray(action[:2]), -1, 1) * 0.2, -1, 1)
        self.t += 1
        success = bool(np.linalg.norm(self.point - self.goal) < 0.15)
        return self.observation(), float(success), False, self.t >= self.max_steps, {"success": success}

    def expert(self) -> np.ndarray:
        move = np.clip((self.goal - self.point) / 0.2, -1, 1)
        return np.array([*move, 0.0, 1.0], dtype=np.float32)


def write_demos(directory, episodes: int = 3, action_dim: int = 4, state_dim: int = 5, seed: int = 0) -> str:
    """Expert episodes of ToyReachEnv written by the demonstrations writer (actions and states cut or cycled to the
    given sizes); returns the directory."""
    env, written = ToyReachEnv(), []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        frames, actions = [], []
        for _ in range(env.max_steps):
            action = env.expert()
            frames.append(obs)
            actions.append(np.resize(action, action_dim))
            obs, _, _, truncated, info = env.step(action)
            if info["success"] or truncated:
                break
        written.append(Episode(instruction=frames[0]["instruction"], env_task="toy-reach", color="red",
                               seed=seed + episode, success=True, scene=np.stack([f["scene"] for f in frames]),
                               wrist=np.stack([f["wrist"] for f in frames]),
                               state=np.stack([np.resize(f["state"], state_dim) for f in frames]),
                               action=np.stack(actions).astype(np.float32)))
    return demos.write_demos(written, str(directory))


class GroundingTask:
    """Box questions about the goal of ToyReachEnv scenes: `{"prompt", "response", "image", "box"}`."""

    eval_splits = ("val",)

    def __init__(self, size: int = 8, seed: int = 0):
        self.size, self.seed = size, seed

    def examples(self, split: str) -> list[dict]:
        env, out = ToyReachEnv(), []
        offset = 0 if split == "train" else 10_000
        for i in range(self.size):
            obs, _ = env.reset(seed=self.seed + offset + i)
            x, y = ((env.goal + 1) / 2 * (SIZE - 1)).round().astype(int)
            box = [int(x) - 2, int(y) - 2, int(x) + 2, int(y) + 2]
            image = Image.fromarray(obs["scene"])
            out.append({"prompt": "box of the goal?", "response": json.dumps(box), "image": image, "box": box})
        return out


def box_hit(example: dict, completion: str) -> float:
    """IoU ≥ 0.5 of the first four integers of the completion against the example's box."""
    numbers = [int(n) for n in re.findall(r"-?\d+", completion)[:4]]
    if len(numbers) < 4:
        return 0.0
    (a1, b1, a2, b2), (c1, d1, c2, d2) = numbers, example["box"]
    inter = max(0, min(a2, c2) - max(a1, c1)) * max(0, min(b2, d2) - max(b1, d1))
    union = (a2 - a1) * (b2 - b1) + (c2 - c1) * (d2 - d1) - inter
    return float(union > 0 and inter / union >= 0.5)


def box_metrics(examples: list[dict], completions: list[str]) -> dict:
    return {"box_iou50": float(np.mean([box_hit(e, c) for e, c in zip(examples, completions)]))}
