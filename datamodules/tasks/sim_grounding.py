"""Spatial grounding questions about simulator scenes (InternVLA-M1's stage-1 data, posttrain/envs/grounding.py):
box, point and trace QA with absolute pixel answers, plus colour / object / left-right questions, on frames of the
scripted expert's episodes in the run's `env` (conf/env/metaworld_pick_place.yaml).

Splits: `train` from the env's training seeds and combinations (or from a demonstration folder, `demos`, whose
frames are then reused instead of simulated again), `val` from held-out layouts (the `val` seeds), `test_combos`
from the held-out object/goal combinations. Held-out answers are scored by `posttrain.envs.grounding.score`
(IoU >= 0.5, point in box / near the goal, trace error, exact word). Simulating costs ~1.5 s per episode at 64 px
(one CPU thread); each episode gives about len/stride frames x len(kinds) examples.
"""
from __future__ import annotations

import numpy as np

from posttrain.envs import make_env
from posttrain.envs.demos import collect_demos, read_demos
from posttrain.envs.grounding import KINDS, episode_frames, qa, score
from posttrain.envs.splits import split_seeds
from posttrain.utils.config import check, check_choice


class SimGroundingTask:
    eval_splits: tuple[str, ...] = ("val", "test_combos")

    def __init__(self, env: dict, view: str = "scene", kinds=KINDS, train_episodes: int = 40,
                 eval_episodes: int = 6, stride: int = 4, trace_points: int = 5, start: int = 0,
                 demos: str | None = None, seed: int = 0):
        check_choice(view, ("scene", "wrist"), "data.task.view")
        check(bool(kinds) and set(kinds) <= set(KINDS), "data.task.kinds", f"choose from {list(KINDS)}, got {kinds}")
        for key, value in (("train_episodes", train_episodes), ("eval_episodes", eval_episodes), ("stride", stride),
                           ("trace_points", trace_points)):
            check(value >= 1, f"data.task.{key}", f"must be >= 1, got {value}")
        self.env_config, self.view, self.kinds = dict(env), view, tuple(kinds)
        self.sizes = {"train": train_episodes, "val": eval_episodes, "test_combos": eval_episodes}
        self.stride, self.trace_points, self.start, self.demos, self.seed = stride, trace_points, start, demos, seed
        self._examples: dict[str, list[dict]] = {}

    def episodes(self, split: str) -> list:
        if split == "train" and self.demos:
            return read_demos(self.demos).episodes
        env = make_env(self.env_config, where="data.task.env", split=split)
        try:
            return collect_demos(env, split_seeds(split, self.sizes[split], self.start))[0]
        finally:
            env.close()

    def examples(self, split: str) -> list[dict]:
        check(split in self.sizes, "split", f"unknown split {split!r}; this task has {sorted(self.sizes)}")
        if split not in self._examples:
            rng = np.random.default_rng([self.seed, list(self.sizes).index(split)])
            frames = [f for e in self.episodes(split) for f in episode_frames(e, self.view, self.stride)]
            self._examples[split] = [qa(frame, kind, rng, self.trace_points) for frame in frames
                                     for kind in self.kinds]
        return self._examples[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return score(example, completion)["correct"]
