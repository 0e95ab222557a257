"""The data engine: new renderings of recorded demonstrations, each paired with the source episode's actions.

For every source episode the recorded actions are replayed from its reset seed (`edits.replay_states`, checked frame
by frame), which gives the simulator states and so both views' depth and segmentation. Each of `prompts` new
appearances (drawn from a named set, seeded by the episode) then yields an edited episode from one editor:

- `generator`: the trained transfer model, conditioned on the source frames' geometry and the appearance's tokens,
  all frames of one edit in batches, the edit's frames sharing one initial noise (reconstructed: a cheap stand-in
  for a video model's temporal coherence);
- `oracle`: the same states rendered by the simulator with the appearance (the ceiling);
- `geometry_breaking`: independent per-view, per-frame recolouring and small warps of the source frames;
- `augmentation`: the conventional-augmentation control, colour jitter and random resized crops of the source frames
  with a draw per view and frame (`posttrain.emma.augment`).

An edited episode keeps the source's actions, states, seed and task; its instruction names the new object colour
(not for `geometry_breaking` and `augmentation`, whose colours are random; their appearances are drawn all the
same and recorded, unused). Its folder is a demonstrations folder
(`posttrain.envs.demos`) whose meta/info.json also says, per episode, the source episode index (`source_episodes`),
the appearance (`appearances`) and the `editor`.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from posttrain.emma.augment import augmentation_options, conventional_augment
from posttrain.emma.edits import inconsistent_edit, replay_states, rerender_states, with_frames
from posttrain.emma.generator import TransferModel, attribute_tokens, geometry_tensor, to_frames
from posttrain.envs.appearance import DEMO, Appearance, sample_appearance
from posttrain.envs.demos import INFO_FILE, Episode, write_demos
from posttrain.envs.metaworld import VIEWS
from posttrain.utils.config import check_choice

EDITORS = ("generator", "oracle", "geometry_breaking", "augmentation")
NAMES_COLOUR = ("generator", "oracle")  # editors that render the requested appearance (the instruction follows it)
NEEDS_GEOMETRY = ("generator", "oracle", "geometry_breaking")  # editors that read the replayed states or geometry


def source_geometry(env, episode: Episode, options: dict | None = None, where: str = "episode"):
    """(states, {<view>_depth, <view>_segmentation: (T, H, W)}) of a recorded episode, by replaying its actions."""
    states = replay_states(env, episode.seed, episode.action, episode.state, options, episode.projections,
                           where=where)
    shown = getattr(env, "fixed_appearance", None) or DEMO  # geometry does not depend on it
    rendered = rerender_states(env, states, shown, geometry=True, task=episode.env_task)
    return states, {k: v for k, v in rendered.items() if k not in VIEWS}


def edit_appearances(set_name: str, prompts: int, seed: int) -> list[Appearance]:
    """The `prompts` appearances of one source episode, drawn from the set with a generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    return [sample_appearance(set_name, rng, "method.appearance_set") for _ in range(prompts)]


@torch.no_grad()
def generate_frames(model: TransferModel, geometry: dict[str, np.ndarray], appearance: Appearance, seed: int,
                    batch_size: int = 64, steps: int | None = None) -> dict[str, np.ndarray]:
    """Both views of every frame re-rendered by the generator: per view (T, H, W, 3) uint8."""
    conditioning = geometry_tensor({v: geometry[f"{v}_depth"] for v in model.views},
                                   {v: geometry[f"{v}_segmentation"] for v in model.views}, model.views)  # (T, G, H, W)
    frames = len(conditioning)
    noise = torch.randn((1, 3 * len(model.views), model.image_size, model.image_size),
                        generator=torch.Generator().manual_seed(seed))  # one noise for the edit's frames
    tokens = attribute_tokens([appearance]).expand(frames, -1)
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, frames, batch_size):
        rows = slice(start, start + batch_size)
        n = len(conditioning[rows])
        outputs.append(model.sample(conditioning[rows].to(device), tokens[rows].to(device),
                                    noise=noise.expand(n, -1, -1, -1), steps=steps).cpu())
    return to_frames(torch.cat(outputs), model.views)


def edit_episode(editor: str, episode: Episode, appearance: Appearance, seed: int, env=None, states=None,
                 geometry=None, model: TransferModel | None = None, batch_size: int = 64,
                 steps: int | None = None, augmentation: dict | None = None) -> Episode:
    """One edited episode: new frames of both views, the source's actions and states. `augmentation`: the
    augmentation editor's parameters (`augment.augmentation_options`; None: the defaults)."""
    check_choice(editor, EDITORS, "method.editor")
    if editor == "generator":
        frames = generate_frames(model, geometry, appearance, seed, batch_size, steps)
    elif editor == "oracle":
        frames = rerender_states(env, states, appearance, task=episode.env_task)
    elif editor == "geometry_breaking":
        frames = inconsistent_edit({v: getattr(episode, v) for v in VIEWS}, np.random.default_rng(seed),
                                   {v: geometry[f"{v}_segmentation"] for v in VIEWS})
    else:
        frames = conventional_augment({v: getattr(episode, v) for v in VIEWS}, seed,
                                      **augmentation_options(augmentation))
    return with_frames(episode, frames, appearance if editor in NAMES_COLOUR else None)


def write_edited(episodes: list[Episode], sources: list[int], appearances: list[Appearance], editor: str,
                 directory: str, env_tasks: list[str] | None = None, extra: dict | None = None) -> str:
    """A demonstrations folder of edited episodes, with their source episodes, appearances and editor in
    meta/info.json."""
    write_demos(episodes, directory, env_tasks=env_tasks)
    path = os.path.join(directory, INFO_FILE)
    with open(path) as handle:
        info = json.load(handle)
    info.update({"editor": editor, "source_episodes": [int(s) for s in sources],
                 "appearances": [a.as_dict() for a in appearances], **(extra or {})})
    with open(path, "w") as handle:
        json.dump(info, handle, indent=1)
    return directory


def source_vs_edit_grid(source: Episode, edits: list[Episode], every: int = 8) -> torch.Tensor:
    """(3, H', W') in [0, 1]: per row one episode (the source first, then its edits), scene and wrist side by side,
    every `every`-th frame."""
    from posttrain.vla.evaluator import frame_grid

    def film(episode: Episode) -> list[np.ndarray]:
        return [np.concatenate([episode.scene[t], episode.wrist[t]], 1) for t in range(0, len(episode), every)]

    return frame_grid([film(source)] + [film(e) for e in edits])
