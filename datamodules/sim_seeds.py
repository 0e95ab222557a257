"""Reset seeds of a simulator split, for a stage that runs episodes itself (e.g. collecting expert demonstrations
with `trainer.predict`): `predict_dataloader` yields lists of seeds, `batch_size` at a time, in order."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from posttrain.envs.splits import split_seeds
from posttrain.utils.config import check


class SeedDataModule(L.LightningDataModule):
    def __init__(self, tokenizer=None, split: str = "train", count: int = 100, start: int = 0, batch_size: int = 10):
        super().__init__()
        check(count >= 1, "data.count", f"must be >= 1, got {count}")
        check(batch_size >= 1, "data.batch_size", f"must be >= 1, got {batch_size}")
        self.seeds = split_seeds(split, count, start, where="data.split")
        self.batch_size = batch_size

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.seeds, batch_size=self.batch_size, shuffle=False, collate_fn=list)
