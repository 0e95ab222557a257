"""Reading a demonstrations directory (LeRobot-style; written by the demonstrations stage):

    DIR/data/episodes.parquet   one row per frame: episode_index, frame_index, observation.images.<view> (PNG
                                bytes), observation.state (list of floats), action (list of floats), task, success
    DIR/meta/info.json          dataset facts
    DIR/meta/stats.json         per dimension mean/std/min/max/q01/q99 of "action" and "observation.state"
"""
from __future__ import annotations

import io
import json
import os
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

IMAGE_PREFIX = "observation.images."


class DemosError(ValueError):
    """A malformed demonstrations directory; the message starts with the file (and row)."""


class Demos:
    """The frames of a demonstrations directory, in (episode, frame) order, with per-episode lookups."""

    def __init__(self, directory: str):
        self.directory = directory
        data, stats = (os.path.join(directory, *p) for p in (("data", "episodes.parquet"), ("meta", "stats.json")))
        for path in (data, stats):
            if not os.path.isfile(path):
                raise DemosError(f"{path}: missing (not a demonstrations directory)")
        with open(stats) as handle:
            self.stats = json.load(handle)
        table = pq.read_table(data)
        self.views = sorted(c[len(IMAGE_PREFIX):] for c in table.column_names if c.startswith(IMAGE_PREFIX))
        needed = ["episode_index", "frame_index", "observation.state", "action", "task"]
        missing = [c for c in needed if c not in table.column_names]
        if missing or not self.views:
            raise DemosError(f"{data}: missing columns {missing or ['observation.images.*']}")
        columns = table.to_pydict()
        order = sorted(range(table.num_rows), key=lambda r: (columns["episode_index"][r], columns["frame_index"][r]))
        self.rows = {name: [columns[name][r] for r in order] for name in columns}
        self.action_dim, self.state_dim = len(self.rows["action"][0]), len(self.rows["observation.state"][0])
        for r in range(len(order)):
            for key, size in (("action", self.action_dim), ("observation.state", self.state_dim)):
                if len(self.rows[key][r]) != size:
                    raise DemosError(f"{data}:{order[r]}: {key} has {len(self.rows[key][r])} values, the first "
                                     f"row {size}")
        self.episodes: dict[int, list[int]] = defaultdict(list)
        for position, episode in enumerate(self.rows["episode_index"]):
            self.episodes[episode].append(position)

    def __len__(self) -> int:
        return len(self.rows["action"])

    def image(self, position: int, view: str) -> np.ndarray:
        """The frame's view as uint8 (H, W, 3)."""
        with Image.open(io.BytesIO(self.rows[IMAGE_PREFIX + view][position])) as image:
            return np.asarray(image.convert("RGB"))

    def state(self, position: int) -> np.ndarray:
        return np.asarray(self.rows["observation.state"][position], dtype=np.float32)

    def task(self, position: int) -> str:
        return str(self.rows["task"][position])

    def chunk(self, position: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """The `horizon` actions from this frame on, (H, A), the last action repeated past the episode's end, and
        the mask (H,) of real steps."""
        frames = self.episodes[self.rows["episode_index"][position]]
        start = frames.index(position)
        real = frames[start: start + horizon]
        steps = real + [real[-1]] * (horizon - len(real))
        actions = np.asarray([self.rows["action"][p] for p in steps], dtype=np.float32)  # (H, A)
        mask = np.asarray([1.0] * len(real) + [0.0] * (horizon - len(real)), dtype=np.float32)  # (H,)
        return actions, mask
