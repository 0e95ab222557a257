"""Supervised (prompt, response) data for SFT and every method that starts from SFT prompts (SPIN, OTR, ...).

Training batches come from the task's `train` split (optionally its first `train_size` examples); validation runs
one dataloader per held-out split (`val`, `test_ood`, ...) whose batches also carry left-padded prompts for
generation-based accuracy.
"""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from datamodules.sampler import train_loader
from posttrain.processors import SFTCollator, make_processor
from posttrain.utils.config import check


class SFTDataModule(L.LightningDataModule):
    train_with_prompts = False  # training batches carry left-padded prompts and raw examples too (online methods)

    def __init__(
        self,
        tokenizer,
        task,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        max_length: int = 256,
        prompt_template: str = "{prompt}",
        train_size: int | None = None,
        eval_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        eval_splits: list[str] | None = None,
    ):
        """`eval_splits`: the held-out splits validation runs on, in order (default: the task's own, e.g. `val`,
        `test_ood`); e.g. `[dev]` for a warm-up that stops on a validation split the evaluation never uses."""
        super().__init__()
        check(batch_size > 0, "data.batch_size", f"must be > 0, got {batch_size}")
        check(train_size is None or train_size > 0, "data.train_size", f"must be > 0 or null, got {train_size}")
        self.task, self.batch_size, self.eval_batch_size = task, batch_size, eval_batch_size
        self.train_size, self.eval_size, self.num_workers, self.seed = train_size, eval_size, num_workers, seed
        # what every batch is encoded with, also handed to the methods that encode or decode text of this data
        self.processor = make_processor(tokenizer, max_length=max_length, prompt_template=prompt_template)
        self.eval_splits = tuple(task.eval_splits if eval_splits is None else eval_splits)
        check(bool(self.eval_splits) or eval_splits is None, "data.eval_splits", "must name at least one split")
        self.splits: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train = self.task.examples("train")[: self.train_size]
        self.splits["train"] = [{**e, "index": i} for i, e in enumerate(train)]
        for split in self.eval_splits:
            held_out = self.task.examples(split)[: self.eval_size]
            self.splits[split] = [{**e, "index": i} for i, e in enumerate(held_out)]

    def is_correct(self, example: dict, completion: str) -> bool:
        return self.task.is_correct(example, completion)

    def train_dataloader(self) -> DataLoader:
        collator = SFTCollator(self.processor, with_prompts=self.train_with_prompts)
        return train_loader(self.splits["train"], self.batch_size, self.seed, collator, self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader(split) for split in self.eval_splits]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Every training prompt once, in order, with its raw example: what a dataset stage generates from."""
        return self.eval_dataloader("train")

    def eval_dataloader(self, split: str) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=SFTCollator(self.processor, with_prompts=True),
            num_workers=self.num_workers,
        )
