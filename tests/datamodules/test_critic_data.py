"""Critic items from the shapes task and from jsonl: balance, both orders, ties, rationale, and bad lines."""
import json
from collections import Counter

import pytest

from datamodules.jsonl import DataError
from datamodules.tasks.critic import CriticJsonlTask, ShapesCriticTask, ShapesQATask, WarmupTask
from posttrain.rewards.parsing import parse_boxed
from posttrain.utils.config import ConfigError
from tests.vlm import shape_image

SHAPES = dict(grid=2, kinds=["colour"], objects=[1, 2], ood_objects=[3, 3], train_size=200, val_size=20,
              test_ood_size=0, seed=0)


def test_shapes_pairs_are_balanced_shuffled_and_one_response_is_right():
    task = ShapesCriticTask(**SHAPES)
    train = task.examples("train")
    assert Counter(e["preferred"] for e in train) == {"1": 100, "2": 100}
    first = [e["preferred"] for e in train[:40]]
    assert first != sorted(first) and any(a == b for a, b in zip(first, first[1:]))  # not alternating either
    for e in train:
        right, wrong = e["responses"][int(e["preferred"]) - 1], e["responses"][2 - int(e["preferred"])]
        assert parse_boxed(right) == e["qa_answer"] != parse_boxed(wrong)
        assert e["response"] == f"<think></think>\\boxed{{{e['preferred']}}}"  # rationale removed: label only
        assert e["prompt"].index(e["responses"][0]) < e["prompt"].index(e["responses"][1])


def test_held_out_pairs_appear_in_both_orders_and_questions_come_with_them():
    task = ShapesCriticTask(**SHAPES)
    val = task.examples("val")
    assert len(val) == 40 and Counter(e["preferred"] for e in val) == {"1": 20, "2": 20}
    for a, b in zip(val[::2], val[1::2]):
        assert a["pair"] == b["pair"] and (a["order"], b["order"]) == (0, 1)
        assert a["responses"] == b["responses"][::-1] and {a["preferred"], b["preferred"]} == {"1", "2"}
    qa = task.examples("qa")
    assert len(qa) == 20 and all(parse_boxed(e["response"]) == e["answer"] for e in qa)


def test_ties_rationales_and_random_labels():
    ties = ShapesCriticTask(tie_fraction=0.3, remove_rationale=False, **SHAPES).examples("train")
    tied = [e for e in ties if e["preferred"] == "tie"]
    assert 40 <= len(tied) <= 80
    assert all(parse_boxed(e["responses"][0]) == parse_boxed(e["responses"][1]) for e in tied)
    assert all(e["responses"][0] != e["responses"][1] for e in tied)  # worded differently
    assert all(e["response"].startswith("<think>") and e["response"] != "<think></think>" for e in ties)
    assert ties[0]["response"].split("</think>")[0] != "<think>"  # the rationale is kept
    coin = ShapesCriticTask(random_labels=True, **SHAPES).examples("train")
    right = sum(parse_boxed(e["responses"][int(e["preferred"]) - 1]) == e["qa_answer"] for e in coin)
    assert 70 <= right <= 130  # labels are coin flips: about half name the right response
    assert coin == ShapesCriticTask(random_labels=1.0, **SHAPES).examples("train")  # true is the fraction 1
    half = ShapesCriticTask(random_labels=0.5, **SHAPES).examples("train")
    right = sum(parse_boxed(e["responses"][int(e["preferred"]) - 1]) == e["qa_answer"] for e in half)
    assert 130 <= right <= 170  # half the items keep the true label, half of the others flip to it: about 3/4
    with pytest.raises(ConfigError, match="data.task.random_labels"):
        ShapesCriticTask(random_labels=1.5, **SHAPES)


def test_qa_and_warmup_tasks():
    qa = ShapesQATask(**SHAPES)
    e = qa.examples("train")[0]
    shape = e["question"].rstrip("?").split()[-1]
    assert e["response"] == f"<think>{shape} {e['answer']}</think>\\boxed{{{e['answer']}}}"
    assert qa.is_correct(e, e["response"]) and not qa.is_correct(e, "red")
    warm = WarmupTask(qa, ShapesCriticTask(random_labels=True, **SHAPES), judge_items=30).examples("train")
    assert len(warm) == 230 and sum("responses" in x for x in warm) == 30
    assert warm != qa.examples("train")[:230]  # shuffled together


def write(folder, rows, name="train.jsonl"):
    with open(folder / name, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(folder / name)


def rows(n=4):
    return [{"image": "img.png", "question": f"Colour {i}?", "response_1": "red", "response_2": "blue",
             "preferred": 1 + i % 2} for i in range(n)]


def test_jsonl_items_read_with_images_and_both_orders(tmp_path):
    shape_image(32, 32, (200, 0, 0)).save(tmp_path / "img.png")
    data = rows(4)
    data[3]["preferred"] = "tie"
    task = CriticJsonlTask(write(tmp_path, data), {"val": write(tmp_path, rows(2), "val.jsonl")}, style="short")
    train = task.examples("train")
    assert [e["preferred"] for e in train] == ["1", "2", "1", "tie"] and train[0]["image"].size == (32, 32)
    val = task.examples("val")
    assert len(val) == 4 and [e["preferred"] for e in val] == ["1", "2", "2", "1"]
    assert val[1]["responses"] == ("blue", "red") and val[1]["source"].endswith("val.jsonl:1")


@pytest.mark.parametrize("change, message", [
    ({"image": "absent.png"}, "image 'absent.png' does not exist"),
    ({"preferred": 3}, "'preferred' must be 1, 2 or 'tie', got '3'"),
    ({"preferred": "A"}, "'preferred' must be 1, 2 or 'tie'"),
    ({"response_2": "  "}, "'response_2' is empty"),
    ({"question": ""}, "'question' is empty"),
])
def test_bad_jsonl_items_name_file_and_line(tmp_path, change, message):
    shape_image(32, 32, (200, 0, 0)).save(tmp_path / "img.png")
    data = rows(4)
    data[2].update(change)
    path = write(tmp_path, data)
    with pytest.raises(DataError, match=f"^{path}:3: ") as err:
        CriticJsonlTask(path)
    assert message in str(err.value)


def test_missing_key_names_file_and_line(tmp_path):
    shape_image(32, 32, (200, 0, 0)).save(tmp_path / "img.png")
    data = rows(3)
    del data[1]["response_1"]
    path = write(tmp_path, data)
    with pytest.raises(DataError, match=f"^{path}:2: missing key 'response_1'"):
        CriticJsonlTask(path)
