"""Offline preference pairs from jsonl: {"prompt", "chosen", "rejected"} (field names configurable)."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from datamodules.collate import Encoder, PairCollator
from datamodules.jsonl import read_jsonl
from datamodules.sampler import EpochShuffleSampler


class PreferenceDataModule(L.LightningDataModule):
    def __init__(
        self,
        tokenizer,
        train_path: str,
        val_path: str | None = None,
        prompt_key: str = "prompt",
        chosen_key: str = "chosen",
        rejected_key: str = "rejected",
        batch_size: int = 16,
        eval_batch_size: int = 64,
        max_length: int = 512,
        prompt_template: str = "{prompt}",
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.paths = {"train": train_path, "val": val_path}
        self.fields = {"prompt": prompt_key, "chosen": chosen_key, "rejected": rejected_key}
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.collator = PairCollator(Encoder(tokenizer, max_length=max_length, prompt_template=prompt_template))
        self.splits: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, path in self.paths.items():
            if path and split not in self.splits:
                self.splits[split] = [{**r, "index": i} for i, r in enumerate(read_jsonl(path, self.fields))]

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        return DataLoader(train, batch_size=self.batch_size, sampler=EpochShuffleSampler(len(train), self.seed),
                          collate_fn=self.collator, num_workers=self.num_workers)

    def val_dataloader(self):
        if "val" not in self.splits:
            return []
        return DataLoader(self.splits["val"], batch_size=self.eval_batch_size, collate_fn=self.collator,
                          num_workers=self.num_workers)
