import json
import os

import pytest

from datamodules.jsonl import DataError, JsonlTask, read_jsonl
from tests.helpers import SHARED


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


FIELDS = {"prompt": "prompt", "response": "response"}


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"prompt": "a", "response": ', "invalid JSON"),
        ('["prompt", "response"]', "expected a JSON object"),
        ('{"prompt": "a"}', "missing key 'response'"),
        ('{"prompt": "a", "response": {"x": 1}}', "must be a string"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path / "d.jsonl", ['{"prompt": "1+1=", "response": "2"}', "", bad_line])
    with pytest.raises(DataError) as err:
        read_jsonl(path, FIELDS)
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(str(tmp_path / "absent.jsonl"), FIELDS)
    with pytest.raises(DataError, match="no records"):
        read_jsonl(write(tmp_path / "empty.jsonl", [""]), FIELDS)


def test_numbers_become_strings_and_field_names_map(tmp_path):
    path = write(tmp_path / "d.jsonl", [json.dumps({"q": "2*3=", "a": 6})])
    assert read_jsonl(path, {"prompt": "q", "response": "a"}) == [{"prompt": "2*3=", "response": "6"}]


def test_task_holds_out_validation(tmp_path):
    rows = [json.dumps({"prompt": f"{i}+0=", "response": str(i)}) for i in range(40)]
    task = JsonlTask(write(tmp_path / "train.jsonl", rows), val_fraction=0.1)
    assert task.eval_splits == ("val",)
    assert len(task.examples("val")) == 4 and len(task.examples("train")) == 36


GSM8K = os.path.join(SHARED, "data", "gsm8k", "test.jsonl")


@pytest.mark.skipif(not os.path.isfile(GSM8K), reason="../shared/data/gsm8k is only beside the developers' checkout")
def test_real_gsm8k_loads_with_field_overrides():
    task = JsonlTask(GSM8K, eval_paths={"test": GSM8K}, prompt_key="question", response_key="answer")
    assert len(task.examples("test")) == 1319
    assert all("####" in e["response"] for e in task.examples("test"))
