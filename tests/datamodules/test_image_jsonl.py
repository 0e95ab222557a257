import io
import json

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from datamodules.image_jsonl import ImageJsonlTask
from datamodules.jsonl import DataError
from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config


def write_jsonl(path, records):
    """One JSON line per record; a string record is written verbatim (a blank line or a broken one)."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def save_png(path, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), colour).save(path)
    return path


def test_relative_and_absolute_paths_load_as_rgb(tmp_path):
    save_png(tmp_path / "data" / "imgs" / "red.png", (200, 10, 10))
    save_png(tmp_path / "data" / "grey.png", 128, mode="L")
    elsewhere = save_png(tmp_path / "elsewhere" / "blue.png", (10, 10, 200, 255), mode="RGBA")
    path = write_jsonl(tmp_path / "data" / "train.jsonl", [
        {"image": "imgs/red.png", "prompt": "Colour?", "response": "red"},
        "",
        {"image": "grey.png", "prompt": "Colour?", "response": "grey"},
        {"image": str(elsewhere), "prompt": "Colour?", "response": "blue"},
    ])
    task = ImageJsonlTask(path, val_fraction=0)
    examples = list(task.examples("train"))
    assert [e["response"] for e in examples] == ["red", "grey", "blue"]
    assert [e["source"] for e in examples] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert all(e["image"].mode == "RGB" and e["image"].size == (8, 6) for e in examples)
    assert [tuple(np.asarray(e["image"])[0, 0]) for e in examples] == [(200, 10, 10), (128, 128, 128), (10, 10, 200)]


def test_field_names_answer_only_files_and_eval_splits(tmp_path):
    save_png(tmp_path / "a.png", (0, 0, 0))
    rows = [{"img": "a.png", "q": f"question {i}", "a": "Yes"} for i in range(3)]
    train, val = write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "val.jsonl", rows[:1])
    task = ImageJsonlTask(train, eval_paths={"val": val}, image_key="img", prompt_key="q", response_key=None,
                          answer_key="a")
    assert task.eval_splits == ("val",) and len(task.examples("train")) == 3
    example = task.examples("val")[0]
    assert (example["prompt"], example["response"], example["answer"]) == ("question 0", "Yes", "Yes")
    assert task.is_correct(example, " yes\n") and not task.is_correct(example, "no")
    assert len(task.examples("train")[1:]) == 2
    with pytest.raises(ConfigError, match="^data.task.response_key"):
        ImageJsonlTask(train, response_key=None, answer_key=None)


@pytest.mark.parametrize("record, message", [
    ({"prompt": "p", "response": "r"}, "missing key 'image'"),
    ({"image": "absent.png", "prompt": "p", "response": "r"}, "image 'absent.png' does not exist"),
])
def test_bad_lines_name_file_and_line_at_load(tmp_path, record, message):
    save_png(tmp_path / "ok.png", (0, 0, 0))
    good = {"image": "ok.png", "prompt": "p", "response": "r"}
    path = write_jsonl(tmp_path / "d.jsonl", [good, "", "  ", record])
    with pytest.raises(DataError) as err:
        ImageJsonlTask(path, val_fraction=0)
    assert str(err.value).startswith(f"{path}:4: ") and message in str(err.value)


def truncated_png(path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[:60])


@pytest.mark.parametrize("broken", [truncated_png, lambda path: path.write_text("not an image\n")])
def test_undecodable_image_names_file_and_line_when_read(tmp_path, broken):
    save_png(tmp_path / "ok.png", (0, 0, 0))
    broken(tmp_path / "bad.png")
    path = write_jsonl(tmp_path / "d.jsonl", [{"image": "ok.png", "prompt": "p", "response": "r"}, "",
                                              {"image": "bad.png", "prompt": "p", "response": "r"}])
    task = ImageJsonlTask(path, val_fraction=0)
    assert task.examples("train")[0]["image"].size == (8, 6)
    with pytest.raises(DataError) as err:
        task.examples("train")[1]
    assert str(err.value).startswith(f"{path}:3: cannot decode image ") and "bad.png" in str(err.value)


def test_data_config_builds_an_sft_datamodule(tmp_path):
    save_png(tmp_path / "a.png", (9, 9, 9))
    rows = [{"image": "a.png", "prompt": f"q{i}", "response": "r"} for i in range(20)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = compose_config(["data=image_jsonl", f"data.task.train_path={train}"], tmp_path)
    datamodule = instantiate(cfg.data, tokenizer=build_char_tokenizer())
    datamodule.setup("fit")
    assert len(datamodule.splits["train"]) == 19 and len(datamodule.splits["val"]) == 1
    assert datamodule.splits["val"][0]["image"].getpixel((0, 0)) == (9, 9, 9)
