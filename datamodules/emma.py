"""EMMA's data (docs/methods/emma.md):

- `RenderPoolData`: frames of the render pool for training the transfer model: `pixels` (B, 3V, H, W) in [-1, 1]
  (both views stacked), `geometry` (B, V·(1+K), H, W) and attribute `tokens` (B, A).
- `DemoEpisodes`: the (index, episode) pairs of a demonstrations folder, for the stages that edit them.
- `MixedRobotDataModule`: `RobotDataModule`'s frames of the real demonstrations plus those of an edited folder (a
  data-engine stage's output), shuffled together or at a fixed share of real samples per batch (`real_fraction`;
  the closed-loop splits, e.g. appearance sets, are the evaluator's `split_envs`); every sample also carries its
  `source` episode (the real
  episode it renders; AdaMix's perceptual reference) and whether it is `generated`. Actions are normalised by the
  real demonstrations' statistics (the edited episodes' actions are the same).
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.robot import Frames, RobotCollator, RobotDataModule
from datamodules.sampler import RatioBatchSampler, train_loader
from posttrain.emma.generator import geometry_tensor, pixels_tensor
from posttrain.emma.pool import read_pool
from posttrain.envs.demos import Demos, action_chunk, read_demos
from posttrain.envs.metaworld import VIEWS
from posttrain.losses.emma import kinematic_complexity
from posttrain.utils.config import check
from posttrain.vla.normalize import normalize_actions

OFFLINE = "offline"  # the prefix of the held-out splits scored by action error (`frame_splits`)


class PoolFrames(Dataset):
    def __init__(self, pool: dict[str, np.ndarray]):
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool["state"])

    def __getitem__(self, i: int) -> int:
        return i


class RenderPoolData(L.LightningDataModule):
    """Args: pool: the render pool folder (a stage's output); batch_size; seed (the shuffling order)."""

    def __init__(self, tokenizer=None, pool: str | None = None, batch_size: int = 16, seed: int = 0):
        super().__init__()
        check(batch_size > 0, "data.batch_size", f"must be > 0, got {batch_size}")
        self.path, self.batch_size, self.seed, self.pool, self.meta = pool, batch_size, seed, None, None

    def setup(self, stage: str | None = None) -> None:
        if self.pool is None:
            check(bool(self.path), "data.pool", "the render pool folder is required")
            self.pool, self.meta = read_pool(self.path)

    def collate(self, rows: list[int]) -> dict:
        pool = self.pool
        return {"pixels": pixels_tensor({v: pool[v][rows] for v in VIEWS}),
                "geometry": geometry_tensor({v: pool[f"{v}_depth"][rows].astype(np.float32) for v in VIEWS},
                                            {v: pool[f"{v}_segmentation"][rows] for v in VIEWS}),
                "tokens": torch.as_tensor(pool["tokens"][rows])}

    def train_dataloader(self) -> DataLoader:
        return train_loader(PoolFrames(self.pool), self.batch_size, self.seed, self.collate)


class DemoEpisodes(L.LightningDataModule):
    """Args: path: a demonstrations folder; batch_size: episodes per predict batch."""

    def __init__(self, tokenizer=None, path: str | None = None, batch_size: int = 2, limit: int | None = None):
        super().__init__()
        self.path, self.batch_size, self.limit = path, batch_size, limit

    def predict_dataloader(self) -> DataLoader:
        check(bool(self.path), "data.path", "the demonstrations folder is required")
        episodes = list(enumerate(read_demos(self.path).episodes))[: self.limit]
        return DataLoader(episodes, batch_size=self.batch_size, shuffle=False, collate_fn=list)


class SourcedFrames(Frames):
    """`Frames` whose samples also name their source episode and whether they are generated."""

    def __init__(self, *args, sources: list[int], generated: list[bool], **kwargs):
        super().__init__(*args, **kwargs)
        self.sources, self.generated = sources, generated

    def __getitem__(self, i: int) -> dict:
        e, _ = self.positions[i]
        return {**super().__getitem__(i), "source": self.sources[e], "generated": self.generated[e]}


class SourcedCollator(RobotCollator):
    def __call__(self, examples: list[dict]) -> dict:
        batch = super().__call__(examples)
        batch["source"] = torch.tensor([e["source"] for e in examples], dtype=torch.long)  # (B,)
        batch["generated"] = torch.tensor([e["generated"] for e in examples], dtype=torch.bool)  # (B,)
        return batch


def proportional_prefix(positions: list[tuple[int, int]], generated: list[bool],
                        size: int | None) -> list[tuple[int, int]]:
    """At most `size` of the (episode, frame) positions, real and edited in the proportions they have in the whole
    (rounded; at least one real frame when there is one): the first real ones, then the first edited ones. None:
    all of them.

    Args:
        positions: every training frame, real episodes' first; generated: per episode, whether it is edited.
    """
    if size is None or size >= len(positions):
        return list(positions)
    real = [p for p in positions if not generated[p[0]]]
    edited = [p for p in positions if generated[p[0]]]
    keep_real = min(max(round(size * len(real) / len(positions)), min(1, size, len(real))), len(real))
    return real[:keep_real] + edited[:size - keep_real]


def normalised_chunks(episodes, q01: torch.Tensor, q99: torch.Tensor,
                      chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The action chunk of every frame of `episodes`, normalised by (q01, q99): (N, H, A), and its mask (N, H)."""
    chunks, masks = [], []
    for episode in episodes:
        for t in range(len(episode)):
            actions, mask = action_chunk(episode.action, t, chunk)
            chunks.append(normalize_actions(torch.from_numpy(actions), q01, q99))
            masks.append(torch.from_numpy(mask))
    return torch.stack(chunks), torch.stack(masks)


def real_per_batch(real_fraction: float, batch_size: int) -> int:
    """The real samples of a batch at `real_fraction` (rounded); at least one of each kind, else an error naming
    data.real_fraction."""
    count = round(real_fraction * batch_size)
    check(0 < count < batch_size, "data.real_fraction", f"{real_fraction} of a batch of {batch_size} is {count} real "
          f"samples; a batch needs at least one real and one edited sample (data.batch_size)")
    return count


class MixedRobotDataModule(RobotDataModule):
    """`RobotDataModule` (no co-training) over real + edited demonstrations.

    Args (besides RobotDataModule's):
        edited_path: a folder of edited episodes (an EMMA data-engine stage's output, with `source_episodes` in its
            meta/info.json); None: the real demonstrations alone.
        real_fraction: the share of real samples in every training batch (spec §2.2, "a fixed ratio of real to
            generated samples per batch"; 0.5 is 1:1), rounded to whole samples; each kind is drawn in shuffled
            passes of its own, so the smaller one repeats sooner. None: real and edited frames shuffled together
            (each batch's share is then random, about the data's). Without edited episodes every sample is real and
            it has no effect.
        train_size: at most this many training frames, real and edited in their proportions (`proportional_prefix`).
        frame_splits: {split: a demonstrations folder} of expert episodes on held-out layouts, e.g. under a held-out
            appearance set; each becomes the held-out split `offline/<split>`, whose every `frame_stride`-th frame
            the evaluator scores by the policy's action error against the expert's chunk (`frame_batch_size` frames
            a batch). The frames are normalised by the training demonstrations' statistics, as the policy's inputs.
    """

    def __init__(self, tokenizer, edited_path: str | None = None, real_fraction: float | None = None,
                 frame_splits: dict[str, str] | None = None, frame_stride: int = 1, frame_batch_size: int = 32,
                 **kwargs):
        super().__init__(tokenizer, **kwargs)
        check(frame_stride >= 1, "data.frame_stride", f"must be >= 1, got {frame_stride}")
        check(frame_batch_size >= 1, "data.frame_batch_size", f"must be >= 1, got {frame_batch_size}")
        self.frame_splits = {str(k): v for k, v in (frame_splits or {}).items()}
        self.frame_stride, self.frame_batch_size = frame_stride, frame_batch_size
        self.eval_splits = self.eval_splits + tuple(f"{OFFLINE}/{split}" for split in self.frame_splits)
        self.offline: dict[str, Frames] | None = None
        check(not self.cotrain, "data.cotrain", "EMMA's arms do not co-train with grounding data")
        check(real_fraction is None or 0 < real_fraction < 1, "data.real_fraction",
              f"must be in (0, 1) or null (shuffled together), got {real_fraction}")
        if real_fraction is not None:
            real_per_batch(real_fraction, self.batch_size)
        self.edited_path, self.real_fraction = edited_path, real_fraction
        self.source_count = 0

    def setup(self, stage: str | None = None) -> None:
        if self.demos is not None:
            return
        super().setup(stage)
        real = self.demos
        count = len(real.episodes)
        episodes, sources, generated = list(real.episodes), list(range(count)), [False] * count
        if self.edited_path:
            edited = read_demos(self.edited_path)
            check(edited.info.get("image_size") == real.info["image_size"], "data.edited_path",
                  f"{self.edited_path} has frames of {edited.info.get('image_size')}, the demonstrations "
                  f"{real.info['image_size']}")
            origin = edited.info.get("source_episodes")
            check(origin is not None and len(origin) == len(edited.episodes), "data.edited_path",
                  f"{self.edited_path} does not name the source episode of each edited one (meta/info.json "
                  f"source_episodes)")
            bad = [j for j, s in enumerate(origin) if not 0 <= int(s) < count
                   or not np.array_equal(edited.episodes[j].action, real.episodes[int(s)].action)]
            check(not bad, "data.edited_path", f"{self.edited_path}: edited episodes {bad[:5]} are not renderings "
                  f"of their source_episodes in {self.path} (index out of range or other actions)")
            episodes += edited.episodes
            sources += [int(s) for s in origin]
            generated += [True] * len(edited.episodes)
        self.demos = Demos(episodes, real.info, real.stats, real.directory)
        self.source_count = len(real.episodes)
        positions = proportional_prefix(self.demos.frames(), generated, self.train_size)
        self.frames = SourcedFrames(self.demos, positions, self.chunk, self.views, self.planner_view, self.prompt_type,
                                    sources=sources, generated=generated)
        self.offline = {split: self.held_out_frames(split, path, real) for split, path in self.frame_splits.items()}

    def held_out_frames(self, split: str, path: str | None, real: Demos) -> Frames:
        """Every `frame_stride`-th frame of a frame split's episodes, normalised by the real demonstrations'
        statistics (what the policy was trained on), not the folder's own."""
        check(bool(path), f"data.frame_splits.{split}", "the folder of held-out expert episodes is required")
        held_out = read_demos(path)
        check(held_out.info.get("image_size") == real.info["image_size"], f"data.frame_splits.{split}",
              f"{path} has frames of {held_out.info.get('image_size')}, the demonstrations {real.info['image_size']}")
        demos = Demos(held_out.episodes, real.info, real.stats, held_out.directory)
        return Frames(demos, demos.frames()[:: self.frame_stride], self.chunk, self.views, self.planner_view,
                      self.prompt_type)

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        self.offline = None

    def val_dataloader(self) -> list[DataLoader]:
        loaders = super().val_dataloader()
        self.setup("validate")  # the offline splits' frames are read with the demonstrations (a no-op once read)
        collate = RobotCollator(self.processor)
        return loaders + [DataLoader(self.offline[split], batch_size=self.frame_batch_size, shuffle=False,
                                     collate_fn=collate) for split in self.frame_splits]

    def kinematic_statistics(self, gripper_dim: int = -1) -> tuple[float, float]:
        """Mean and standard deviation of `kinematic_complexity` over the real demonstrations' normalised chunks."""
        chunks, masks = normalised_chunks(self.demos.episodes[: self.source_count], self.frames.q01, self.frames.q99,
                                          self.chunk)
        values = kinematic_complexity(chunks, masks, gripper_dim)
        return float(values.mean()), float(values.std(unbiased=False))

    def train_dataloader(self):
        collate = SourcedCollator(self.processor)
        is_edited = [self.frames.generated[e] for e, _ in self.frames.positions]
        edited = [i for i, flag in enumerate(is_edited) if flag]
        if self.real_fraction is None or not edited:
            return train_loader(self.frames, self.batch_size, self.seed, collate, self.num_workers)
        real = [i for i, flag in enumerate(is_edited) if not flag]
        batches = RatioBatchSampler(range(len(self.frames)), self.batch_size, True, real, edited,
                                    real_per_batch(self.real_fraction, self.batch_size), self.seed)
        return DataLoader(self.frames, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)
