"""Preference pairs {"prompt", "chosen", "rejected"}: from jsonl files (field names configurable) or from a task's
built-in pairs (e.g. `ArithmeticPairTask`), with one validation dataloader per held-out split."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from datamodules.jsonl import read_jsonl
from datamodules.sampler import train_loader
from posttrain.processors import PairCollator, make_processor
from posttrain.utils.config import check


class PreferenceDataModule(L.LightningDataModule):
    """Args:
        train_path, val_path: jsonl files (the held-out split is then `val`, if given); or
        task: an object with `examples(split)` and `eval_splits` whose examples are pairs (e.g. ArithmeticPairTask);
            exactly one of train_path and task.
        train_size, eval_size: use only the first N pairs of train / of each held-out split.
    Batches hold the PairCollator tensors (chosen_*, rejected_*) and the raw `examples`.
    """

    def __init__(
        self,
        tokenizer,
        train_path: str | None = None,
        val_path: str | None = None,
        task=None,
        prompt_key: str = "prompt",
        chosen_key: str = "chosen",
        rejected_key: str = "rejected",
        batch_size: int = 16,
        eval_batch_size: int = 64,
        max_length: int = 512,
        prompt_template: str = "{prompt}",
        train_size: int | None = None,
        eval_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check((train_path is None) != (task is None), "data.train_path",
              "give exactly one of data.train_path (jsonl pairs) and data.task (built-in pairs)")
        check(task is None or val_path is None, "data.val_path", "only applies to jsonl pairs (data.train_path)")
        check(batch_size > 0, "data.batch_size", f"must be > 0, got {batch_size}")
        check(train_size is None or train_size > 0, "data.train_size", f"must be > 0 or null, got {train_size}")
        check(eval_size is None or eval_size > 0, "data.eval_size", f"must be > 0 or null, got {eval_size}")
        self.task = task
        self.paths = {"train": train_path, "val": val_path}
        self.eval_splits = tuple(task.eval_splits) if task is not None else (("val",) if val_path else ())
        self.fields = {"prompt": prompt_key, "chosen": chosen_key, "rejected": rejected_key}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.train_size, self.eval_size = train_size, eval_size
        self.processor = make_processor(tokenizer, max_length=max_length, prompt_template=prompt_template)
        self.collator = PairCollator(self.processor)
        self.splits: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split in ("train", *self.eval_splits):
            rows = self.task.examples(split) if self.task is not None else read_jsonl(self.paths[split], self.fields)
            rows = rows[: self.train_size if split == "train" else self.eval_size]
            self.splits[split] = [{**r, "index": i} for i, r in enumerate(rows)]

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.splits["train"], self.batch_size, self.seed, self.collator, self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self.splits[split], batch_size=self.eval_batch_size, collate_fn=self.collator,
                           num_workers=self.num_workers) for split in self.eval_splits]
