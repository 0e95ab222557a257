"""Image data for diffusion models: prompts with images (winners only, or all images of a pretraining set) or
preference pairs, from the built-in procedural task or from jsonl or parquet files.

Records are `{"prompt", "image"}` (winners) or `{"prompt", "chosen", "rejected"}` (pairs, as Pick-a-Pic exports):
jsonl lines with image paths relative to the file's folder (or absolute), or parquet rows whose images are encoded
bytes, `{"bytes", "path"}` structs (Hugging Face datasets) or paths (`datamodules/diffusion_parquet.py`). Loading a
file checks every record (its keys, that each image exists, that a pair's two images differ); an image is decoded
each time its example is read, and its size is checked when it becomes a tensor. Every problem stops with
`DataError("<jsonl path>:<line>: ...")` or `DataError("<parquet path>:row <i>: ...")`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.diffusion_parquet import decode_image, digest, read_parquet
from datamodules.image_jsonl import _record_lines
from datamodules.jsonl import DataError, read_jsonl
from datamodules.sampler import train_loader
from posttrain.utils.config import check, check_choice

KINDS = ("images", "pairs")
IMAGE_FIELDS = {"images": ("image",), "pairs": ("chosen", "rejected")}


class LazyImages:
    """A split's checked rows read as examples whose images are decoded on access."""

    def __init__(self, rows: list[dict], fields: tuple[str, ...]):
        self.rows, self.fields = rows, fields

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self.rows[index], self.fields)
        row = self.rows[index]
        return {**row, **{f: decode_image(row[f], row["source"]) for f in self.fields}}


class DiffusionJsonlTask:
    """Args:
        train_path: training file, jsonl or (by its `.parquet` suffix) parquet; eval_paths: split -> file (without
            any, the first `val_fraction` of train is held out as `val`).
        kind: images ({"prompt", "image"}) or pairs ({"prompt", "chosen", "rejected"}).
        prompt_key / image_key / chosen_key / rejected_key: the files' field names.
    """

    def __init__(self, train_path: str, eval_paths: Mapping[str, str] | None = None, kind: str = "images",
                 prompt_key: str = "prompt", image_key: str = "image", chosen_key: str = "chosen",
                 rejected_key: str = "rejected", val_fraction: float = 0.05):
        check_choice(kind, KINDS, "data.task.kind")
        self.kind = kind
        names = {"image": image_key, "chosen": chosen_key, "rejected": rejected_key}
        self.fields = {"prompt": prompt_key, **{f: names[f] for f in IMAGE_FIELDS[kind]}}
        splits = {"train": self.read(train_path)}
        for split, path in dict(eval_paths or {}).items():
            splits[split] = self.read(path)
        if len(splits) == 1 and val_fraction > 0:
            held = max(1, int(len(splits["train"]) * val_fraction))
            splits = {"train": splits["train"][held:], "val": splits["train"][:held]}
        self._splits = splits
        self.eval_splits = tuple(s for s in splits if s != "train")

    def examples(self, split: str) -> LazyImages:
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return LazyImages(self._splits[split], IMAGE_FIELDS[self.kind])

    def read(self, path: str) -> list[dict]:
        if path.endswith(".parquet"):
            rows = read_parquet(path, self.fields, IMAGE_FIELDS[self.kind])
            for row in rows:
                self.check_pair(row)
            return rows
        rows = read_jsonl(path, self.fields)
        folder = os.path.dirname(os.path.abspath(path))
        for row, lineno in zip(rows, _record_lines(path)):
            row["source"] = where = f"{path}:{lineno}"
            for field in IMAGE_FIELDS[self.kind]:
                image = os.path.join(folder, row[field])  # an absolute path stays as it is
                if not os.path.isfile(image):
                    raise DataError(f"{where}: image {row[field]!r} does not exist (looked for {image})")
                row[field] = image
            self.check_pair(row)
        return rows

    def check_pair(self, row: dict) -> None:
        if self.kind == "pairs" and same_image(row["chosen"], row["rejected"]):
            shown = row["chosen"] if isinstance(row["chosen"], str) else "the same bytes"
            raise DataError(f"{row['source']}: chosen and rejected are the same image ({shown}); a pair needs two "
                            f"different images")


def same_image(a: bytes | str, b: bytes | str) -> bool:
    """The same path, or two images (files or encoded bytes) with the same bytes."""
    if isinstance(a, str) and isinstance(b, str) and os.path.realpath(a) == os.path.realpath(b):
        return True
    size = lambda image: os.path.getsize(image) if isinstance(image, str) else len(image)  # noqa: E731
    return size(a) == size(b) and digest(a) == digest(b)


def to_pixels(image: Image.Image, size: int, resize: bool, where: str) -> torch.Tensor:
    """(3, size, size) in [-1, 1]; an image of another size is resized (bicubic) when `resize`, else an error."""
    if image.size != (size, size):
        if not resize:
            raise DataError(f"{where}: image is {image.size[0]}x{image.size[1]}, the model's images are "
                            f"{size}x{size} (data.resize=true resizes them)")
        image = image.resize((size, size), Image.BICUBIC)
    array = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


class DiffusionCollator:
    """Examples -> {"pixels"} (or {"chosen_pixels", "rejected_pixels"}) (B, 3, S, S) in [-1, 1], the processor's
    conditioning tensors ("class_labels" or "input_ids"), "index" (B,), "prompts" and the raw "examples"."""

    def __init__(self, processor, resize: bool):
        self.processor, self.resize = processor, resize

    def __call__(self, examples: list[dict]) -> dict:
        size = self.processor.image_size
        batch = {}
        for field, key in (("image", "pixels"), ("chosen", "chosen_pixels"), ("rejected", "rejected_pixels")):
            if field in examples[0]:
                batch[key] = torch.stack([to_pixels(e[field], size, self.resize, e["source"]) for e in examples])
        prompts = [e["prompt"] for e in examples]
        try:
            batch.update(self.processor.condition(prompts))
        except KeyError as err:
            bad = next(e for e in examples if e["prompt"] not in (self.processor.classes or []))
            raise DataError(f"{bad['source']}: {err.args[0]}") from None
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)
        batch["prompts"], batch["examples"] = prompts, examples
        return batch


class DiffusionDataModule(L.LightningDataModule):
    """Args:
        tokenizer: the model builder's `DiffusionProcessor` (conditioning and image size).
        task: `BlobsTask` or `DiffusionJsonlTask` (anything with `examples(split)` and `eval_splits`).
        resize: resize images of another size to the model's (else they are an error naming their file:line).
        train_size, eval_size: only the first N examples of train / of each held-out split.
    """

    def __init__(self, tokenizer, task, batch_size: int = 16, eval_batch_size: int = 64, resize: bool = False,
                 train_size: int | None = None, eval_size: int | None = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        check(batch_size > 0, "data.batch_size", f"must be > 0, got {batch_size}")
        check(eval_batch_size > 1, "data.eval_batch_size", f"must be > 1 (sample statistics), got {eval_batch_size}")
        check(train_size is None or train_size > 0, "data.train_size", f"must be > 0 or null, got {train_size}")
        check(eval_size is None or eval_size > 1, "data.eval_size", f"must be > 1 or null, got {eval_size}")
        check(hasattr(tokenizer, "image_size"), "model", "diffusion data needs a diffusion model (model=diffusion_tiny "
              "or model=sd), whose builder gives the image processor")
        self.task, self.processor = task, tokenizer
        self.eval_splits = tuple(task.eval_splits)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.train_size, self.eval_size = train_size, eval_size
        self.collator = DiffusionCollator(tokenizer, resize)
        self.splits: dict[str, list[dict]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split in ("train", *self.eval_splits):
            rows = self.task.examples(split)
            rows = rows[: self.train_size if split == "train" else self.eval_size]
            self.splits[split] = IndexedExamples(rows)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.splits["train"], self.batch_size, self.seed, self.collator, self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self.splits[split], batch_size=self.eval_batch_size, collate_fn=self.collator,
                           num_workers=self.num_workers) for split in self.eval_splits]


class IndexedExamples:
    """A split's examples, each with its position as "index" (decoded lazily when the split is)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.rows[index], "index": index}
