"""Image-text data from jsonl: one `{"image": path, "prompt": ..., "response": ... and/or "answer": ...}` per line.

Image paths are relative to the jsonl file's folder, or absolute. Loading a file checks every line cheaply (the
keys, and that the image file exists); an image is decoded, to RGB, each time its example is read, so the task
holds no pixels. Every problem stops with `DataError("<jsonl path>:<line>: ...")`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from PIL import Image

from datamodules.jsonl import DataError, JsonlTask, read_jsonl
from posttrain.rewards import ExactMatchVerifier
from posttrain.utils.config import check

_VERIFIER = ExactMatchVerifier(normalize=True)


def load_image(path: str, where: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as err:  # PIL reports undecodable files through several exception types
        raise DataError(f"{where}: cannot decode image {path} ({type(err).__name__}: {err})") from None


class ImageExamples(Sequence):
    """A split's rows (image = a checked path) read as examples whose image is decoded on access."""

    def __init__(self, rows: list[dict]):
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageExamples(self._rows[index])
        row = self._rows[index]
        return {**row, "image": load_image(row["image"], row["source"])}


class ImageJsonlTask(JsonlTask):
    """Image-question pairs from jsonl files; held-out splits are scored by `ExactMatchVerifier(normalize=True)`.

    Examples are `{"image": PIL RGB image, "prompt", "response", "answer", "source": "<jsonl path>:<line>"}`.

    Args:
        train_path: training file.
        eval_paths: split name -> file. Without any, the first `val_fraction` of train is held out as `val`.
        image_key / prompt_key / response_key / answer_key: the files' field names. Files with only an answer
            (prompts for online methods) set `response_key: null`: the answer is then also the SFT target.
    """

    def __init__(
        self,
        train_path: str,
        eval_paths: Mapping[str, str] | None = None,
        image_key: str = "image",
        prompt_key: str = "prompt",
        response_key: str | None = "response",
        answer_key: str | None = None,
        val_fraction: float = 0.05,
    ):
        check(bool(response_key or answer_key), "data.task.response_key", "set response_key or answer_key")
        self.image_key = image_key
        super().__init__(train_path, eval_paths, prompt_key=prompt_key, response_key=response_key or answer_key,
                         answer_key=answer_key, val_fraction=val_fraction)

    def examples(self, split: str) -> ImageExamples:
        return ImageExamples(super().examples(split))

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return _VERIFIER(example, completion).correct

    def _read(self, path: str, fields: Mapping[str, str]) -> list[dict]:
        rows = read_jsonl(path, {**fields, "image": self.image_key})
        folder = os.path.dirname(os.path.abspath(path))
        for row, lineno in zip(rows, _record_lines(path)):
            where = f"{path}:{lineno}"
            image = os.path.join(folder, row["image"])  # an absolute path stays as it is
            if not os.path.isfile(image):
                raise DataError(f"{where}: image {row['image']!r} does not exist (looked for {image})")
            row["image"], row["source"] = image, where
        return rows


def _record_lines(path: str) -> list[int]:
    """Line numbers of the non-blank lines: read_jsonl returns one row for each of them, in order."""
    with open(path, encoding="utf-8") as handle:
        return [lineno for lineno, line in enumerate(handle, start=1) if line.strip()]
