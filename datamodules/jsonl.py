"""jsonl reading with errors that name the file and line, and a task over jsonl files."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence


class DataError(ValueError):
    """A data file is malformed; the message starts with `path:line`."""


def read_jsonl(path: str, fields: Mapping[str, str]) -> list[dict]:
    """Reads one JSON object per line; `fields` maps our name -> the file's key (e.g. {"prompt": "question"}).

    Blank lines are skipped. Every other problem stops with `DataError("<path>:<line>: ...")`.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            row = {}
            for ours, theirs in fields.items():
                if theirs not in record:
                    raise DataError(f"{where}: missing key {theirs!r} (has {sorted(record)})")
                value = record[theirs]
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)
                if not isinstance(value, str):
                    raise DataError(f"{where}: key {theirs!r} must be a string, got {type(value).__name__}")
                row[ours] = value
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


class JsonlTask:
    """Prompt/response pairs from jsonl files; held-out splits are scored by exact match of the answer field.

    Args:
        train_path: training file.
        eval_paths: split name -> file, e.g. {"val": "val.jsonl"}. Without any, `val_fraction` of train is held out.
        prompt_key / response_key / answer_key: the files' field names (answer defaults to the response).
    """

    def __init__(
        self,
        train_path: str,
        eval_paths: Mapping[str, str] | None = None,
        prompt_key: str = "prompt",
        response_key: str = "response",
        answer_key: str | None = None,
        val_fraction: float = 0.05,
    ):
        fields = {"prompt": prompt_key, "response": response_key}
        if answer_key:
            fields["answer"] = answer_key
        train = [self._with_answer(r) for r in self._read(train_path, fields)]
        self._splits = {"train": train}
        for split, path in dict(eval_paths or {}).items():
            self._splits[split] = [self._with_answer(r) for r in self._read(path, fields)]
        if len(self._splits) == 1 and val_fraction > 0:
            n_val = max(1, int(len(train) * val_fraction))
            self._splits = {"train": train[n_val:], "val": train[:n_val]}
        self.eval_splits = tuple(s for s in self._splits if s != "train")

    def examples(self, split: str) -> list[dict]:
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return self._splits[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return completion.strip() == example["answer"].strip()

    def _read(self, path: str, fields: Mapping[str, str]) -> list[dict]:
        return read_jsonl(path, fields)

    @staticmethod
    def _with_answer(row: dict) -> dict:
        row.setdefault("answer", row["response"])
        return row


def split_names(task) -> Sequence[str]:
    return ("train", *task.eval_splits)
