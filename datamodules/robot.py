"""Robot demonstrations for VLA post-training, optionally co-trained with grounding SFT data (InternVLA-M1).

Training batches: `{"robot": ..., "grounding": ...}` (Lightning's CombinedLoader, the two of equal length). A robot
batch holds, per frame, the planner's prompt (its camera image and instruction ⊕ spatial prompt, left-padded, through
the VLM processor), every camera view, the normalised state, the chunk of `chunk` future actions normalised to
[-1, 1] by the data's q01/q99 (padded past the episode's end with its last action, `action_mask` 0 there) and the
frame `index`. A grounding batch is an SFT batch of the grounding task's training examples (box/point/trace and
general QA), drawn so that every robot batch has one (`CyclingSampler`), present only with `cotrain`.

Held-out splits (`eval_splits`): the environment's episode splits `episode_splits` (Meta-World: `val` = held-out
layouts, `test_combos` = held-out task x colour combinations, `test_paraphrase` = held-out phrasings), each
`eval_episodes` reset seeds from `eval_seed_start` on (no demonstration's seed), and `grounding` (the grounding
task's held-out examples, with prompts for generation: retention of box/point skills). Their batches name the
episodes' `seed`s, which the evaluator plays, or are SFT rows.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.sampler import train_loader
from posttrain.envs.demos import Demos, action_chunk, read_demos
from posttrain.processors import SFTCollator, make_processor
from posttrain.utils.config import check, check_choice
from posttrain.vla.inputs import robot_inputs, views_tensor
from posttrain.vla.normalize import normalize_actions, normalize_state, statistics_of
from posttrain.vla.prompts import PROMPT_TYPES, spatial_prompt


class CyclingSampler(Sampler[int]):
    """`num_samples` indices into `num_examples`: shuffled passes one after another, the order a function of
    (seed, epoch) only (so a resumed run draws the same grounding batches)."""

    def __init__(self, num_examples: int, num_samples: int, seed: int = 0):
        self.num_examples, self.num_samples, self.seed, self.epoch = num_examples, num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7)
        passes = -(-self.num_samples // self.num_examples)
        order = torch.cat([torch.randperm(self.num_examples, generator=generator) for _ in range(passes)])
        return iter(order[: self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples


class Frames(Dataset):
    """Demonstration frames as examples: prompt, planner image, views, normalised state and action chunk."""

    def __init__(self, demos: Demos, positions: list[tuple[int, int]], chunk: int, views: list[str],
                 planner_view: str, prompt_type: str):
        self.demos, self.positions, self.chunk = demos, positions, chunk
        self.views, self.planner_view, self.prompt_type = views, planner_view, prompt_type
        stats = statistics_of(demos.stats)
        self.q01, self.q99 = torch.tensor(stats["action_q01"]), torch.tensor(stats["action_q99"])
        self.mean, self.std = torch.tensor(stats["state_mean"]), torch.tensor(stats["state_std"])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        e, t = self.positions[i]
        episode = self.demos.episodes[e]
        actions, mask = action_chunk(episode.action, t, self.chunk)
        return {
            "index": i,
            "prompt": spatial_prompt(episode.instruction, self.prompt_type, seed=i),
            "image": Image.fromarray(getattr(episode, self.planner_view)[t]),
            "views": [getattr(episode, v)[t] for v in self.views],
            "state": normalize_state(torch.from_numpy(episode.state[t]), self.mean, self.std),
            "actions": normalize_actions(torch.from_numpy(actions), self.q01, self.q99),  # (H, A)
            "action_mask": torch.from_numpy(mask).float(),  # (H,)
        }


class RobotCollator:
    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples: list[dict]) -> dict:
        batch = robot_inputs(self.processor, [e["prompt"] for e in examples], [e["image"] for e in examples],
                             views_tensor([e["views"] for e in examples]), torch.stack([e["state"] for e in examples]))
        batch["actions"] = torch.stack([e["actions"] for e in examples])  # (B, H, A)
        batch["action_mask"] = torch.stack([e["action_mask"] for e in examples])  # (B, H)
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)  # (B,)
        return batch


def episode_specs(examples: list[dict]) -> dict:
    return {"seed": torch.tensor([e["seed"] for e in examples])}  # (B,)


class RobotDataModule(L.LightningDataModule):
    """Args:
        path: the demonstrations directory (a dataset stage's output).
        grounding: a task with `examples(split)` of `{"prompt", "response", "image"}` grounding QA (its "train" split
            for co-training, `grounding_split` for retention); None: neither.
        cotrain: pair every robot batch with a grounding batch of `grounding_batch_size`.
        chunk: actions per chunk (the model's `chunk`); views: camera views the action expert sees, in order;
        planner_view: the one the planner sees (the view stage-1 grounding data was made from).
        spatial_prompt: none | random | box | unified (`posttrain.vla.prompts`).
        episode_splits: the environment's held-out splits played in closed loop (`make_env(..., split=...)`).
        eval_episodes, eval_seed_start: per split, the reset seeds eval_seed_start, eval_seed_start + 1, ...
            (beyond the demonstrations' seeds).
    """

    def __init__(self, tokenizer, path: str | None = None, grounding=None, cotrain: bool = False, chunk: int = 4,
                 views: tuple[str, ...] = ("scene", "wrist"), planner_view: str = "scene",
                 spatial_prompt: str = "unified", batch_size: int = 16, grounding_batch_size: int = 4,
                 eval_batch_size: int = 8, episode_splits: tuple[str, ...] = ("val", "test_combos", "test_paraphrase"),
                 eval_episodes: int = 8, eval_seed_start: int = 1_000_000,
                 grounding_split: str = "val", eval_size: int | None = None, train_size: int | None = None,
                 max_length: int = 256, prompt_template: str = "{image}{prompt}", num_workers: int = 0, seed: int = 0):
        super().__init__()
        check(batch_size > 0, "data.batch_size", f"must be > 0, got {batch_size}")
        check(chunk > 0, "data.chunk", f"must be > 0, got {chunk}")
        check(not cotrain or grounding is not None, "data.cotrain", "needs data.grounding (a grounding task)")
        check_choice(spatial_prompt, PROMPT_TYPES, "data.spatial_prompt")
        self.path, self.grounding, self.cotrain, self.chunk = path, grounding, cotrain, chunk
        self.views, self.planner_view, self.prompt_type = list(views), planner_view, spatial_prompt
        self.batch_size, self.grounding_batch_size = batch_size, grounding_batch_size
        check(len(episode_splits) > 0 and "grounding" not in episode_splits, "data.episode_splits",
              f"at least one environment split (not 'grounding'), got {list(episode_splits)}")
        self.eval_batch_size, self.episode_splits = eval_batch_size, list(episode_splits)
        self.eval_seeds = [eval_seed_start + i for i in range(eval_episodes)]
        self.grounding_split, self.eval_size = grounding_split, eval_size
        self.train_size, self.num_workers, self.seed = train_size, num_workers, seed
        self.processor = make_processor(tokenizer, max_length=max_length, prompt_template=prompt_template)
        self.eval_splits = tuple(self.episode_splits) + (("grounding",) if grounding is not None else ())
        self.demos: Demos | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.demos is not None:
            return
        check(bool(self.path), "data.path", "the demonstrations directory is required")
        self.demos = read_demos(self.path)
        available = self.demos.info["views"]
        missing = [v for v in [*self.views, self.planner_view] if v not in available]
        check(not missing, "data.views", f"views {missing} are not in {self.path} (it has {available})")
        positions = self.demos.frames()[: self.train_size]
        self.frames = Frames(self.demos, positions, self.chunk, self.views, self.planner_view, self.prompt_type)
        if self.cotrain:
            self.grounding_train = [{**e, "index": i} for i, e in enumerate(self.grounding.examples("train"))]
        if self.grounding is not None:
            held_out = list(self.grounding.examples(self.grounding_split))[: self.eval_size]
            self.grounding_eval = [{**e, "index": i} for i, e in enumerate(held_out)]

    def check_model(self, action_dim: int, state_dim: int) -> None:
        """A model whose action (or, when it reads one, state) size differs from the demonstrations' stops with an
        error naming model.action_dim (model.state_dim)."""
        self.demos.check_dims(action_dim, state_dim or None, where="model")

    def teardown(self, stage: str) -> None:
        """Drops the decoded frames after a fit or validation (`setup` reads them again if a later one needs them):
        a run keeps every stage's datamodule, and each arm's would otherwise hold its own copy."""
        self.demos = None
        self.frames = self.grounding_train = self.grounding_eval = None

    @property
    def statistics(self) -> dict[str, list[float]]:
        return statistics_of(self.demos.stats)

    def encode_observations(self, observations: list[dict], seeds: list[int]) -> dict:
        """Environment observations -> the model's inputs, exactly as training frames are encoded (the closed-loop
        evaluator's `encode`): instruction ⊕ spatial prompt (random padding drawn from the episode's seed), the
        planner's view, every view, the state normalised by the demonstrations' statistics."""
        stats = self.statistics
        state = torch.from_numpy(np.stack([o["state"] for o in observations])).float()  # (N, S)
        state = normalize_state(state, torch.tensor(stats["state_mean"]), torch.tensor(stats["state_std"]))
        prompts = [spatial_prompt(o["instruction"], self.prompt_type, seed=s) for o, s in zip(observations, seeds)]
        images = [Image.fromarray(o[self.planner_view]) for o in observations]
        views = views_tensor([[o[v] for v in self.views] for o in observations])  # (N, V, 3, H, W)
        return robot_inputs(self.processor, prompts, images, views, state)

    def train_dataloader(self):
        robot = train_loader(self.frames, self.batch_size, self.seed, RobotCollator(self.processor), self.num_workers)
        loaders = {"robot": robot}
        if self.cotrain:
            sampler = CyclingSampler(len(self.grounding_train), len(robot) * self.grounding_batch_size, self.seed)
            loaders["grounding"] = DataLoader(self.grounding_train, batch_size=self.grounding_batch_size,
                                              sampler=sampler, collate_fn=SFTCollator(self.processor),
                                              num_workers=self.num_workers)
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        loaders = []
        for _ in self.episode_splits:
            specs = [{"seed": s} for s in self.eval_seeds]
            loaders.append(DataLoader(specs, batch_size=self.eval_batch_size, collate_fn=episode_specs))
        if self.grounding is not None:
            loaders.append(DataLoader(self.grounding_eval, batch_size=self.eval_batch_size,
                                      collate_fn=SFTCollator(self.processor, with_prompts=True)))
        return loaders
