"""Episode tasks for agents in an environment (conf/data/episodes.yaml; the environment is `env`, conf/env/).

A task is an environment reset seed: training batches are `train_size` seeds (`{"task": (B,), "examples"}`), the
held-out splits `val` (in distribution) and `test_ood` (the env config's `ood` block; only when it has one) are
`eval_size` other seeds each, evaluated by playing episodes (`posttrain.episodes.evaluate`). With `expert_steps`
the training batches are instead SFT rows: every step of the scripted expert's successful episodes on
`expert_tasks` seeds, written and tokenised as the policy writes its answers (the SFT initialisation).
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.sampler import EpochShuffleSampler
from posttrain.envs import make_env
from posttrain.episodes.rollout import EpisodeSettings, expert_trajectory, sft_examples
from posttrain.processors import SFTCollator, make_processor
from posttrain.utils.config import check

TRAIN_SEEDS, VAL_SEEDS, OOD_SEEDS = 0, 1_000_000, 2_000_000  # disjoint seed ranges per split


def collate_tasks(items: list[dict]) -> dict:
    return {"task": torch.tensor([i["task"] for i in items], dtype=torch.long), "examples": list(items)}


class EpisodeDataModule(L.LightningDataModule):
    def __init__(self, tokenizer, env: dict, train_size: int = 64, eval_size: int = 32, batch_size: int = 4,
                 eval_batch_size: int = 32, expert_steps: bool = False, expert_tasks: int = 256,
                 markovian: bool = False, max_length: int = 2048, seed: int = 0):
        super().__init__()
        for key, value in (("train_size", train_size), ("eval_size", eval_size), ("batch_size", batch_size),
                           ("eval_batch_size", eval_batch_size), ("expert_tasks", expert_tasks)):
            check(value >= 1, f"data.{key}", f"must be >= 1, got {value}")
        self.env_config = dict(env)
        make_env(self.env_config)  # an unknown env id or argument stops here, naming the key
        self.processor = make_processor(tokenizer, max_length)
        self.train_size, self.eval_size, self.batch_size, self.eval_batch_size = (train_size, eval_size, batch_size,
                                                                                  eval_batch_size)
        self.expert_steps, self.expert_tasks, self.markovian, self.seed = expert_steps, expert_tasks, markovian, seed
        self.eval_splits = ("val", "test_ood") if self.env_config.get("ood") else ("val",)
        self.train_items: list[dict] | None = None

    def tasks(self, offset: int, count: int) -> list[dict]:
        return [{"task": offset + self.seed * 100_003 + i, "index": i} for i in range(count)]

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        if not self.expert_steps:
            self.train_items = self.tasks(TRAIN_SEEDS, self.train_size)
            return
        env, settings, rows = make_env(self.env_config), EpisodeSettings(markovian=self.markovian), []
        for item in self.tasks(TRAIN_SEEDS, self.expert_tasks):
            trajectory = expert_trajectory(env, item["task"], self.processor, settings)
            if trajectory.success:  # SFT on the successful ones, each ending with "[DONE]"
                rows += sft_examples(trajectory)
        self.train_items = [{**row, "index": i} for i, row in enumerate(rows)]

    def train_dataloader(self) -> DataLoader:
        collate = SFTCollator(self.processor) if self.expert_steps else collate_tasks
        # the order of an epoch depends only on (seed, epoch), so a resumed run visits the tasks in the same order
        return DataLoader(self.train_items, batch_size=self.batch_size, collate_fn=collate,
                          sampler=EpochShuffleSampler(len(self.train_items), seed=self.seed))

    def val_dataloader(self) -> list[DataLoader]:
        offsets = {"val": VAL_SEEDS, "test_ood": OOD_SEEDS}
        return [DataLoader(self.tasks(offsets[split], self.eval_size), batch_size=self.eval_batch_size,
                           collate_fn=collate_tasks) for split in self.eval_splits]
