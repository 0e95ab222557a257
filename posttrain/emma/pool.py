"""The random-appearance render pool the generator and the quality probes train on (spec §5: "a *separate* pool of
random-appearance renders"): the scripted expert's episodes from their own reset seeds, each with an appearance drawn
from a named set (`in_domain` by default), every `stride`-th frame kept with both views' RGB, depth and segmentation,
the proprioceptive state, the object's world position and the appearance's attribute tokens.

    DIR/pool.npz     scene, wrist (N, H, W, 3) uint8; scene_depth, wrist_depth (N, H, W) float16 (metres);
                     scene_segmentation, wrist_segmentation (N, H, W) uint8; state (N, D) float32;
                     object (N, 3) float32 (world metres); tokens (N, len(ATTRIBUTES)) int64; episode (N,) int64
    DIR/meta.json    image_size, views, appearance set, frames, episodes, stride
"""
from __future__ import annotations

import json
import os

import numpy as np

from posttrain.envs.metaworld import VIEWS
from posttrain.utils.config import check

POOL_FILE = "pool.npz"
META_FILE = "meta.json"


def collect_pool_episode(env, seed: int, stride: int = 4, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """One expert episode of `env` (a MetaWorldEnv with an appearance set and geometry=True), every stride-th frame."""
    from posttrain.emma.generator import attribute_tokens
    from posttrain.envs.appearance import Appearance

    obs, info = env.reset(seed=seed)
    check("appearance" in info and f"{VIEWS[0]}_depth" in obs, "env",
          "the render pool needs appearance control and geometry (env.appearance=<set>, geometry=true)")
    tokens = attribute_tokens([Appearance(**info["appearance"])])[0].numpy()
    frames: dict[str, list] = {}
    t = 0
    while True:
        if t % stride == 0:
            for view in VIEWS:
                for suffix in ("", "_depth", "_segmentation"):
                    frames.setdefault(view + suffix, []).append(obs[view + suffix])
            frames.setdefault("state", []).append(obs["state"])
            frames.setdefault("object", []).append(env.sim().points()["object"].astype(np.float32))
            frames.setdefault("tokens", []).append(tokens)
        obs, _, terminated, truncated, info = env.step(env.expert_action(obs))
        t += 1
        if terminated or truncated or (max_frames is not None and len(frames["state"]) >= max_frames):
            break
    return {k: np.stack(v) for k, v in frames.items()}


def write_pool(episodes: list[dict[str, np.ndarray]], directory: str, appearance_set: str, stride: int) -> str:
    check(bool(episodes), "pool", "no episode to write")
    arrays = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    arrays["episode"] = np.concatenate([np.full(len(e["state"]), i, dtype=np.int64) for i, e in enumerate(episodes)])
    for view in VIEWS:
        arrays[f"{view}_depth"] = arrays[f"{view}_depth"].astype(np.float16)
    os.makedirs(directory, exist_ok=True)
    np.savez_compressed(os.path.join(directory, POOL_FILE), **arrays)
    meta = {"image_size": int(arrays[VIEWS[0]].shape[1]), "views": list(VIEWS), "appearance_set": appearance_set,
            "frames": int(len(arrays["state"])), "episodes": len(episodes), "stride": stride}
    with open(os.path.join(directory, META_FILE), "w") as handle:
        json.dump(meta, handle, indent=1)
    return directory


def read_pool(directory: str, where: str = "data.pool") -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and meta of a render pool folder; a folder without one stops with an error naming `where`."""
    path = os.path.join(directory or "", POOL_FILE)
    check(os.path.isfile(path) and os.path.isfile(os.path.join(directory, META_FILE)), where,
          f"{directory!r} holds no render pool ({POOL_FILE} and {META_FILE})")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    with open(os.path.join(directory, META_FILE)) as handle:
        return arrays, json.load(handle)
