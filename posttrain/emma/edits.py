"""Two reference editors of recorded multi-view episodes, the bounds a generative editor is read between
(../shared/methods/emma.md §5):

- **oracle re-rendering** (`rerender_states`, `oracle_episode`): the recorded simulator states rendered again with a
  new appearance. Geometry, motion and the two views' agreement are exact, so it is the ceiling of a perfect,
  geometry-preserving, multi-view-consistent editor. Demonstration folders do not store simulator states; they are
  recovered by `replay_states`, which replays the recorded actions from the recorded reset seed and checks every
  frame's proprioceptive state and projected object and goal positions against the recorded ones (the simulation is
  deterministic; the hand starts at the same place in every layout, so the state alone would not catch a wrong
  seed).
- **geometry-breaking editor** (`inconsistent_edit`): each view and each frame recoloured independently (per
  segmentation class when the class maps are given, else the whole image), then shifted by a few pixels and slightly
  rotated and scaled. The views disagree, the colours flicker over time and the image no longer sits where the
  actions were recorded: what weaker editors do.

Both return new frames only; the actions of an edited episode are the source episode's, unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from posttrain.envs.appearance import Appearance
from posttrain.envs.demos import Episode
from posttrain.envs.metaworld import SEGMENTATION_CLASSES, VIEWS
from posttrain.utils.config import check


class ReplayError(RuntimeError):
    """Replaying a recorded episode's actions did not reproduce its recorded states."""


# ---- oracle re-rendering --------------------------------------------------------------------------------------------
def replay_states(env, seed: int, actions: np.ndarray, recorded_state: np.ndarray | None = None,
                  options: dict | None = None, recorded_projections: list[dict] | None = None, atol: float = 1e-5,
                  where: str = "episode") -> list[dict]:
    """The simulator state at each frame of an episode (the state each action was taken at): `reset(seed, options)`
    (the options the episode was collected with) and the recorded actions, stepped.

    Args:
        env: a MetaWorldEnv (its appearance option does not matter: layouts do not depend on it).
        actions: (T, A) the recorded actions.
        recorded_state: (T, D) the recorded proprioceptive states, checked frame by frame; None: unchecked.
        recorded_projections: per frame, the recorded `info["projections"]`; their scene-view object and goal
            positions are checked (to `atol` pixels); None or empty: unchecked.
    Raises ReplayError naming `where` and the first frame that differs by more than `atol`.
    """
    obs, info = env.reset(seed=seed, options=options)
    states = []
    for t, action in enumerate(np.asarray(actions, dtype=np.float32)):
        if recorded_state is not None and not np.allclose(obs["state"], recorded_state[t], atol=atol):
            raise ReplayError(f"{where}: frame {t}: replayed state {obs['state'].tolist()} differs from the recorded "
                              f"{np.asarray(recorded_state[t]).tolist()} (another seed, reset options or simulator?)")
        if recorded_projections:
            for point in ("object", "goal"):
                replayed, recorded = info["projections"]["scene"][point], recorded_projections[t]["scene"][point]
                if not np.allclose(replayed, recorded, atol=atol):
                    raise ReplayError(f"{where}: frame {t}: replayed {point} at {replayed} px differs from the "
                                      f"recorded {recorded} (another seed, reset options or simulator?)")
        states.append(env.sim_state())
        obs, _, _, _, info = env.step(action)
    return states


def rerender_states(env, states: list[dict], appearance: Appearance, geometry: bool = False,
                    task: str | None = None) -> dict[str, np.ndarray]:
    """The states rendered with `appearance`: per view (T, H, W, 3) uint8, and with `geometry` also
    `<view>_depth` (T, H, W) float32 and `<view>_segmentation` (T, H, W) uint8. The task's simulation is left at
    the last state with this appearance; the env needs a reset before it is stepped again."""
    sim = env.sim(task)
    sim.set_appearance(appearance)
    frames: dict[str, list[np.ndarray]] = {}
    for state in states:
        sim.set_state(state)
        for view in VIEWS:
            rendered, _ = sim.render_views(view, geometry)
            frames.setdefault(view, []).append(rendered["rgb"])
            if geometry:
                frames.setdefault(f"{view}_depth", []).append(rendered["depth"])
                frames.setdefault(f"{view}_segmentation", []).append(rendered["segmentation"])
    return {key: np.stack(value) for key, value in frames.items()}


def oracle_episode(env, episode: Episode, appearance: Appearance, options: dict | None = None,
                   where: str = "episode") -> Episode:
    """`episode` re-rendered with `appearance`: same actions, states and layout, new images of both views; the
    instruction names the new object colour in place of the old one."""
    states = replay_states(env, episode.seed, episode.action, episode.state, options, episode.projections,
                           where=where)
    return with_frames(episode, rerender_states(env, states, appearance, task=episode.env_task), appearance)


def with_frames(episode: Episode, frames: dict[str, np.ndarray], appearance: Appearance | None = None) -> Episode:
    """`episode` with new images of both views and copies of its own actions and states (an edit never changes
    what the robot did); with `appearance`, its instruction and colour name the new object colour in place of the
    old one (None: an editor whose colours are arbitrary, the instruction is kept)."""
    instruction, color = episode.instruction, episode.color
    if appearance is not None:
        instruction, color = instruction.replace(color, appearance.object_color), appearance.object_color
    return replace(episode, instruction=instruction, color=color, scene=frames["scene"], wrist=frames["wrist"],
                   action=episode.action.copy(), state=episode.state.copy())


# ---- the geometry-breaking editor -----------------------------------------------------------------------------------
KEEP_CLASSES = ("robot", "goal")  # left as they are: the recolouring targets what a generator is asked to change


def random_tint(rng: np.random.Generator) -> np.ndarray:
    """A random colour (3,) in [0.15, 1]: the new hue of a region, its shading kept."""
    return rng.uniform(0.15, 1.0, size=3)


def recolour(image: np.ndarray, rng: np.random.Generator, segmentation: np.ndarray | None) -> np.ndarray:
    """Each edited region's luminance times a random colour; without segmentation, the whole image's."""
    pixels = image.astype(np.float32) / 255.0
    luminance = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    out = pixels.copy()
    if segmentation is None:
        regions = [np.ones(image.shape[:2], dtype=bool)]
    else:
        keep = [SEGMENTATION_CLASSES.index(name) for name in KEEP_CLASSES]
        regions = [segmentation == c for c in range(len(SEGMENTATION_CLASSES)) if c not in keep]
    for region in regions:
        out[region] = np.clip(luminance[region, None] * random_tint(rng) * 1.8, 0.0, 1.0)
    return (out * 255).round().astype(np.uint8)


def jitter_geometry(image: np.ndarray, rng: np.random.Generator, max_shift: int, max_rotation: float,
                    max_scale: float) -> np.ndarray:
    """A small random affine warp about the centre: shift ≤ max_shift px, rotation ≤ max_rotation degrees, scale
    within 1 ± max_scale; uncovered borders repeat the nearest edge colour."""
    h, w = image.shape[:2]
    dx, dy = rng.integers(-max_shift, max_shift + 1, size=2) if max_shift > 0 else (0, 0)
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    scale = rng.uniform(1.0 - max_scale, 1.0 + max_scale)
    # PIL maps each output pixel to an input pixel: the inverse of (scale, rotate about the centre, then shift)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = w / 2.0, h / 2.0
    x0, y0 = cx + dx, cy + dy  # where the centre moves to
    coeffs = (cos, sin, cx - cos * x0 - sin * y0, -sin, cos, cy + sin * x0 - cos * y0)
    padded = np.pad(image, ((h, h), (w, w), (0, 0)), mode="edge")  # edge colours for uncovered borders
    coeffs = (coeffs[0], coeffs[1], coeffs[2] + w, coeffs[3], coeffs[4], coeffs[5] + h)
    warped = Image.fromarray(padded).transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    return np.asarray(warped)


def inconsistent_edit(frames: dict[str, np.ndarray], rng: np.random.Generator,
                      segmentation: dict[str, np.ndarray] | None = None, max_shift: int = 2,
                      max_rotation: float = 3.0, max_scale: float = 0.04) -> dict[str, np.ndarray]:
    """The geometry-breaking baseline: every view and every frame recoloured and warped with its own random draw.

    Args:
        frames: per view, (T, H, W, 3) uint8.
        segmentation: per view, (T, H, W) class maps (SEGMENTATION_CLASSES) to recolour background, table and
            object separately (robot and goal kept); None: one recolouring of the whole image.
        max_shift, max_rotation, max_scale: the warp's bounds (pixels, degrees, relative scale).
    Returns: per view, new (T, H, W, 3) uint8 frames.
    """
    check(max_shift >= 0 and max_rotation >= 0 and 0 <= max_scale < 1, "edits.inconsistent",
          f"bounds must be >= 0 (scale < 1), got shift={max_shift}, rotation={max_rotation}, scale={max_scale}")
    out = {}
    for view, video in frames.items():
        masks = None if segmentation is None else segmentation[view]
        out[view] = np.stack([jitter_geometry(recolour(frame, rng, None if masks is None else masks[t]), rng,
                                              max_shift, max_rotation, max_scale) for t, frame in enumerate(video)])
    return out
