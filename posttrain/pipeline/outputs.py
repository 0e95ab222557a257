"""What a stage hands on, written to and read back from its folder: a model, a reward model or a dataset."""
from __future__ import annotations

import json
import os

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from posttrain.models import builders
from posttrain.models.value_head import ValueModel

DATASET_FILE = "train.jsonl"
ROWS_FILE = "rows.json"  # written last: its presence marks a complete cached stage


def save_stage_model(model, tokenizer, directory: str) -> None:
    """An LM as a model directory; a ValueModel as its backbone's directory plus the head's weights."""
    if isinstance(model, ValueModel):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    else:
        builders.save(model, tokenizer, directory)


def load_stage_model(directory: str, model_cfg: DictConfig | dict):
    """What `save_stage_model` wrote, built by the model config the stage's model came from (`model_cfg`, with
    `name_or_path` pointed at `directory`), so it comes back in that config's dtype: a ValueModel where a head was
    saved, else the LM."""
    backbone = instantiate(model_cfg, name_or_path=directory)[0]
    head = os.path.join(directory, ValueModel.HEAD_FILE)
    if not os.path.isfile(head):
        return backbone
    model = ValueModel(backbone)
    model.head.load_state_dict(torch.load(head, map_location="cpu"))
    return model


def dataset_path(output: str, directory: str) -> str:
    """What a dataset stage hands on: its jsonl file (`output: dataset`) or its folder (`output: dataset_dir`)."""
    return directory if output == "dataset_dir" else os.path.join(directory, DATASET_FILE)


def write_dataset(examples: list[dict], directory: str) -> str:
    """The examples as jsonl (one object per line, `prompt`/`response`/... as `data=jsonl` reads); returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, DATASET_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    return path


def write_rows(rows: list[dict], directory: str, name: str) -> None:
    """The stage's rows and the name they are labelled with (`name`, which is not part of the cache key)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ROWS_FILE), "w") as handle:
        json.dump({"name": name, "rows": rows}, handle, indent=1)


def read_rows(directory: str, name: str) -> list[dict] | None:
    """A cached stage's rows relabelled with the stage's current `name`, or None when the stage has not completed
    there."""
    path = os.path.join(directory, ROWS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        saved = json.load(handle)
    old = saved["name"]
    return [{**row, "run": name + row["run"][len(old):] if row["run"].startswith(old) else row["run"]}
            for row in saved["rows"]]
