"""Expert demonstrations in the simulator, saved and read back in a LeRobot-style layout.

    DIR/data/episodes.parquet   one row per frame (the observation the action was taken at):
        episode_index  int64            frame_index  int64 (0..T-1 within the episode)
        observation.images.scene  PNG bytes     observation.images.wrist  PNG bytes
        observation.state  list<float32> (D)    action  list<float32> (A)
        task  string (the instruction)          success  bool (the episode's; only successful ones are kept)
        env_task  string (Meta-World task)      color  string      seed  int64 (the reset seed)
        projections  string (JSON: per view, object/goal/gripper [u, v] and object_box, in pixels)
    DIR/meta/info.json          fps, image size, state/action dims, views, env tasks, episode and frame counts
    DIR/meta/stats.json         per dimension of `action` and `observation.state`: mean, std, min, max, q01, q99

`collect_episode` runs the scripted expert from a reset seed; `write_demos` writes the folder; `read_demos` reads
it back, checking every row, and stops at the first problem with `DemoDataError("<file>:row <i>: ...")`.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from posttrain.utils.config import check

DATA_FILE = os.path.join("data", "episodes.parquet")
INFO_FILE = os.path.join("meta", "info.json")
STATS_FILE = os.path.join("meta", "stats.json")
VIEW_COLUMNS = {"scene": "observation.images.scene", "wrist": "observation.images.wrist"}
COLUMNS = ("episode_index", "frame_index", "observation.images.scene", "observation.images.wrist",
           "observation.state", "action", "task", "success", "env_task", "color", "seed", "projections")
FPS = 80  # Meta-World: frame_skip 5 x MuJoCo timestep 2.5 ms = 12.5 ms per env step


class DemoDataError(ValueError):
    """A demonstration folder is malformed; the message starts with `<file>:row <i>` (or the file alone)."""


@dataclass
class Episode:
    instruction: str
    env_task: str
    color: str
    seed: int
    success: bool
    scene: np.ndarray  # (T, H, W, 3) uint8
    wrist: np.ndarray  # (T, H, W, 3) uint8
    state: np.ndarray  # (T, D) float32
    action: np.ndarray  # (T, A) float32
    projections: list[dict] = field(default_factory=list)  # per frame: info["projections"]

    def __len__(self) -> int:
        return len(self.action)


@dataclass
class Demos:
    episodes: list[Episode]
    info: dict  # meta/info.json
    stats: dict  # meta/stats.json
    directory: str = ""

    def frames(self) -> list[tuple[int, int]]:
        """(episode, frame) of every frame, in order: the samples of a frame-level dataset."""
        return [(e, t) for e, episode in enumerate(self.episodes) for t in range(len(episode))]

    def check_dims(self, action_dim: int | None = None, state_dim: int | None = None, where: str = "model") -> None:
        """A model whose action (state) size differs from the demonstrations' stops with an error naming
        `<where>.action_dim` (`<where>.state_dim`) and the folder."""
        for key, wanted in (("action_dim", action_dim), ("state_dim", state_dim)):
            check(wanted is None or wanted == self.info[key], f"{where}.{key}",
                  f"is {wanted}, but the demonstrations in {self.directory} have {key} = {self.info[key]}")


def action_chunk(actions: np.ndarray, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The `horizon` actions from frame t (horizon, A), padded past the episode's end with its last action, and
    the mask (horizon,) of real ones (a chunked policy's target)."""
    index = np.minimum(np.arange(t, t + horizon), len(actions) - 1)
    return actions[index], np.arange(t, t + horizon) < len(actions)


def normalize(values: np.ndarray, stats: dict) -> np.ndarray:
    """Per dimension, [q01, q99] of `stats` (a stats.json entry) -> [-1, 1], clipped there; a constant dimension
    (q01 = q99) is only shifted."""
    low, high = np.asarray(stats["q01"], np.float32), np.asarray(stats["q99"], np.float32)
    half = np.where(high > low, (high - low) / 2, 1.0)
    return np.clip((values - (low + high) / 2) / half, -1.0, 1.0)


def unnormalize(values: np.ndarray, stats: dict) -> np.ndarray:
    """The inverse of `normalize` on [-1, 1] (what an action expert's output is executed as)."""
    low, high = np.asarray(stats["q01"], np.float32), np.asarray(stats["q99"], np.float32)
    half = np.where(high > low, (high - low) / 2, 1.0)
    return values * half + (low + high) / 2


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def collect_episode(env, seed: int, options: dict | None = None) -> Episode:
    """One episode of the env's scripted expert from `reset(seed)`: the frames it acted on and its actions (the
    final observation, after the last action, is not a frame)."""
    obs, info = env.reset(seed=seed, options=options)
    frames, actions, projections, success = [], [], [], False
    while True:
        action = env.expert_action(obs)
        frames.append(obs)
        projections.append(info["projections"])
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        success = success or info["success"]
        if terminated or truncated:
            break
    return Episode(instruction=frames[0]["instruction"], env_task=info["task"], color=info["color"], seed=seed,
                   success=bool(success), scene=np.stack([f["scene"] for f in frames]),
                   wrist=np.stack([f["wrist"] for f in frames]), state=np.stack([f["state"] for f in frames]),
                   action=np.stack(actions).astype(np.float32), projections=projections)


def collect_demos(env, seeds: list[int], options: dict | None = None) -> tuple[list[Episode], dict]:
    """The expert's episodes from `seeds`, only the successful ones kept; also {"attempted", "kept", "frames"}."""
    episodes = [collect_episode(env, seed, options) for seed in seeds]
    kept = [episode for episode in episodes if episode.success]
    return kept, {"attempted": len(episodes), "kept": len(kept), "frames": sum(len(e) for e in kept)}


def episode_rows(episode: Episode, index: int) -> list[dict]:
    return [{"episode_index": index, "frame_index": t, VIEW_COLUMNS["scene"]: png(episode.scene[t]),
             VIEW_COLUMNS["wrist"]: png(episode.wrist[t]), "observation.state": episode.state[t].tolist(),
             "action": episode.action[t].tolist(), "task": episode.instruction, "success": episode.success,
             "env_task": episode.env_task, "color": episode.color, "seed": episode.seed,
             "projections": json.dumps(episode.projections[t]) if episode.projections else "{}"}
            for t in range(len(episode))]


def dim_stats(values: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension statistics of (N, D) values (q01/q99: the normalisation bounds of the action expert)."""
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "min": values.min(0).tolist(),
            "max": values.max(0).tolist(), "q01": np.quantile(values, 0.01, axis=0).tolist(),
            "q99": np.quantile(values, 0.99, axis=0).tolist()}


def write_demos(episodes: list[Episode], directory: str, env_tasks: list[str] | None = None) -> str:
    """The episodes as DIR/data/episodes.parquet + DIR/meta/{info,stats}.json; returns DIR. Only successful
    episodes belong in a demonstration set: a failed one is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check(bool(episodes), "demos", "no episode to write (did every expert episode fail?)")
    for i, episode in enumerate(episodes):
        check(episode.success, f"demos[{i}]", "a failed episode; keep only successful ones")
    rows = [row for i, episode in enumerate(episodes) for row in episode_rows(episode, i)]
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    os.makedirs(os.path.join(directory, "meta"), exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema())
    pq.write_table(table, os.path.join(directory, DATA_FILE))
    first = episodes[0]
    info = {"fps": FPS, "image_size": list(first.scene.shape[1:3]), "views": list(VIEW_COLUMNS),
            "state_dim": int(first.state.shape[1]), "action_dim": int(first.action.shape[1]),
            "env_tasks": sorted(env_tasks or {e.env_task for e in episodes}), "episodes": len(episodes),
            "frames": len(rows), "columns": list(COLUMNS), "only_successful": True}
    stats = {"action": dim_stats(np.concatenate([e.action for e in episodes])),
             "observation.state": dim_stats(np.concatenate([e.state for e in episodes]))}
    for name, content in ((INFO_FILE, info), (STATS_FILE, stats)):
        with open(os.path.join(directory, name), "w") as handle:
            json.dump(content, handle, indent=1)
    return directory


def schema():
    import pyarrow as pa

    return pa.schema([("episode_index", pa.int64()), ("frame_index", pa.int64()),
                      (VIEW_COLUMNS["scene"], pa.binary()), (VIEW_COLUMNS["wrist"], pa.binary()),
                      ("observation.state", pa.list_(pa.float32())), ("action", pa.list_(pa.float32())),
                      ("task", pa.string()), ("success", pa.bool_()), ("env_task", pa.string()),
                      ("color", pa.string()), ("seed", pa.int64()), ("projections", pa.string())])


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DemoDataError(f"{path}: no such file (a demonstration folder has {DATA_FILE}, {INFO_FILE}, "
                            f"{STATS_FILE})")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DemoDataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


def read_demos(directory: str) -> Demos:
    """The episodes of a folder `write_demos` wrote, images decoded, every row checked against meta/info.json."""
    import pyarrow.parquet as pq

    info, stats = read_json(os.path.join(directory, INFO_FILE)), read_json(os.path.join(directory, STATS_FILE))
    path = os.path.join(directory, DATA_FILE)
    if not os.path.isfile(path):
        raise DemoDataError(f"{path}: no such file")
    try:
        columns = pq.read_table(path).to_pydict()
    except Exception as err:  # pyarrow reports corrupt files through several exception types
        raise DemoDataError(f"{path}: cannot read parquet ({type(err).__name__}: {err})") from None
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DemoDataError(f"{path}: missing columns {missing} (has {sorted(columns)})")
    count = len(columns["episode_index"])
    episodes: list[list[int]] = []  # row numbers per episode
    for i in range(count):
        row = {c: columns[c][i] for c in COLUMNS}
        new = not episodes or row["episode_index"] != columns["episode_index"][episodes[-1][-1]]
        check_row(row, info, f"{path}:row {i}", expected_episode=len(episodes) if new else len(episodes) - 1,
                  expected_frame=0 if new else len(episodes[-1]))
        if new:
            episodes.append([])
        episodes[-1].append(i)
    if len(episodes) != info.get("episodes"):
        raise DemoDataError(f"{path}: {len(episodes)} episodes, meta/info.json says {info.get('episodes')}")
    return Demos([to_episode(columns, rows, path, info) for rows in episodes], info, stats, directory)


def check_row(row: dict, info: dict, where: str, expected_episode: int, expected_frame: int) -> None:
    if row["episode_index"] != expected_episode or row["frame_index"] != expected_frame:
        raise DemoDataError(f"{where}: expected episode {expected_episode} frame {expected_frame}, got episode "
                            f"{row['episode_index']} frame {row['frame_index']} (rows in episode, frame order)")
    for column, key in (("observation.state", "state_dim"), ("action", "action_dim")):
        value = row[column]
        if value is None or len(value) != info[key]:
            raise DemoDataError(f"{where}: {column} has {None if value is None else len(value)} values, "
                                f"meta/info.json {key} = {info[key]}")
    if not row["success"]:
        raise DemoDataError(f"{where}: a frame of a failed episode (the set holds successful ones only)")


def decode(data: bytes, where: str, size: list[int]) -> np.ndarray:
    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as err:  # PIL reports undecodable data through several exception types
        raise DemoDataError(f"{where}: cannot decode the PNG ({type(err).__name__}: {err})") from None
    if list(image.shape[:2]) != list(size):
        raise DemoDataError(f"{where}: image is {list(image.shape[:2])}, meta/info.json image_size = {size}")
    return image


def to_episode(columns: dict, rows: list[int], path: str, info: dict) -> Episode:
    first = rows[0]
    images = {view: np.stack([decode(columns[column][i], f"{path}:row {i}", info["image_size"]) for i in rows])
              for view, column in VIEW_COLUMNS.items()}  # (T, H, W, 3) each
    return Episode(instruction=columns["task"][first], env_task=columns["env_task"][first],
                   color=columns["color"][first], seed=int(columns["seed"][first]),
                   success=bool(columns["success"][first]), scene=images["scene"], wrist=images["wrist"],
                   state=np.array([columns["observation.state"][i] for i in rows], dtype=np.float32),
                   action=np.array([columns["action"][i] for i in rows], dtype=np.float32),
                   projections=[json.loads(columns["projections"][i]) for i in rows])
