import re
from collections import Counter

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image
from scipy import ndimage

from datamodules.tasks.shapes import COLOURS, KINDS, SHAPES, ShapesTask, answer_choices
from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config

SMALL = dict(train_size=400, val_size=200, test_ood_size=200, seed=1)


@pytest.fixture(scope="module")
def task():
    return ShapesTask(**SMALL)


def all_examples(task):
    return [e for split in ("train", "val", "test_ood") for e in task.examples(split)]


def expected_answer(example) -> str:
    """The answer recomputed from the drawn objects' pixel boxes, not from the grid cells the task reasons with."""
    objects, prompt = example["objects"], example["prompt"]
    if m := re.fullmatch(r"How many (\w+) shapes\?", prompt):
        return str(sum(o.colour == m[1] for o in objects))
    if m := re.fullmatch(r"How many (\w+)s\?", prompt):
        return str(sum(o.shape == m[1] for o in objects))
    if m := re.fullmatch(r"What colour is the (\w+)\?", prompt):
        (only,) = [o for o in objects if o.shape == m[1]]
        return only.colour
    if m := re.fullmatch(r"Is the (\w+) (\w+) left of the (\w+) (\w+)\?", prompt):
        (a,) = [o for o in objects if (o.colour, o.shape) == (m[1], m[2])]
        (b,) = [o for o in objects if (o.colour, o.shape) == (m[3], m[4])]
        assert a.x + a.size < b.x or b.x + b.size < a.x, "the two objects overlap horizontally"
        return "yes" if a.x < b.x else "no"
    assert prompt == "Which shape is leftmost?"
    first, *rest = sorted(objects, key=lambda o: o.x)
    assert all(first.x + first.size < o.x for o in rest), "the leftmost object is not clearly leftmost"
    return first.shape


def test_answers_follow_from_the_drawn_objects(task):
    for e in all_examples(task):
        assert e["answer"] == e["response"] == expected_answer(e), e["prompt"]
        assert e["kind"] in KINDS and task.is_correct(e, f" {e['answer'].upper()}\n")


def test_pixels_show_the_stated_objects(task):
    """Every object's colour fills its box centre, each colour's blobs are its objects (one blob each, so counts
    hold in pixels too), nothing is drawn outside the boxes, and a blob's fill of its box tells its shape."""
    fill_range = {"square": (0.99, 1.0), "circle": (0.7, 0.9), "triangle": (0.4, 0.65)}
    for e in task.examples("val")[:100] + task.examples("test_ood")[:100]:
        pixels = np.asarray(e["image"])  # (H, W, 3)
        assert e["image"].mode == "RGB" and pixels.shape == (64, 64, 3)
        inside = np.zeros(pixels.shape[:2], dtype=bool)
        for o in e["objects"]:
            centre = pixels[o.y + o.size // 2, o.x + o.size // 2]
            assert tuple(centre) == COLOURS[o.colour]
            inside[o.y:o.y + o.size, o.x:o.x + o.size] = True
        assert (pixels[~inside] == 255).all()
        for colour, rgb in COLOURS.items():
            blobs, n = ndimage.label((pixels == rgb).all(axis=-1))
            drawn = [o for o in e["objects"] if o.colour == colour]
            assert n == len(drawn)
            for o in drawn:
                blob = blobs == blobs[o.y + o.size // 2, o.x + o.size // 2]
                low, high = fill_range[o.shape]
                assert low <= blob.sum() / o.size**2 <= high, (o, blob.sum())


def test_colour_answers_are_painted_on_the_named_shape(task):
    for e in task.examples("val"):
        if e["kind"] == "colour":
            (o,) = [o for o in e["objects"] if o.shape == e["prompt"].split()[-1][:-1]]
            box = np.asarray(e["image"])[o.y:o.y + o.size, o.x:o.x + o.size]  # (size, size, 3)
            assert (box == COLOURS[e["answer"]]).all(axis=-1).mean() > 0.4


def test_rendering_is_deterministic_and_seeded():
    a, b, other = ShapesTask(**SMALL), ShapesTask(**SMALL), ShapesTask(**{**SMALL, "seed": 2})
    for split in ("train", "val", "test_ood"):
        assert [e["prompt"] for e in a.examples(split)] == [e["prompt"] for e in b.examples(split)]
        assert [e["image"].tobytes() for e in a.examples(split)] == [e["image"].tobytes() for e in b.examples(split)]
    assert [e["objects"] for e in a.examples("val")] != [e["objects"] for e in other.examples("val")]
    # val is drawn from its own seed: its examples do not depend on the size of train
    smaller = ShapesTask(**{**SMALL, "train_size": 10})
    assert [e["objects"] for e in smaller.examples("val")] == [e["objects"] for e in a.examples("val")]


def test_splits_are_disjoint(task):
    def keys(split):
        return {(e["prompt"], e["image"].tobytes()) for e in task.examples(split)}

    train, val, ood = keys("train"), keys("val"), keys("test_ood")
    assert len(train) == 400 and len(val) == 200 and len(ood) == 200
    assert not train & val and not train & ood and not val & ood


def test_ood_split_has_more_objects_and_only_seen_answers(task):
    for split, (low, high) in (("train", (1, 4)), ("val", (1, 4)), ("test_ood", (5, 6))):
        sizes = Counter(len(e["objects"]) for e in task.examples(split))
        assert min(sizes) >= low and max(sizes) <= high and len(sizes) >= 2, (split, sizes)
    seen = {e["answer"] for e in task.examples("train")}
    assert {e["answer"] for e in task.examples("test_ood")} <= seen


def test_answers_are_balanced_and_baselines_are_as_documented():
    """The majority-class baselines quoted in the module docstring (seed 0, default sizes)."""
    task = ShapesTask(seed=0)
    documented = {"train": (0.125, 0.321), "val": (0.126, 0.324), "test_ood": (0.126, 0.324)}
    for split, (constant, per_kind) in documented.items():
        examples = task.examples(split)
        assert max(Counter(e["answer"] for e in examples).values()) / len(examples) == pytest.approx(constant, abs=5e-4)
        best = 0
        for kind in KINDS:
            counts = Counter(e["answer"] for e in examples if e["kind"] == kind)
            assert set(counts) == set(answer_choices(kind, 4)) and max(counts.values()) - min(counts.values()) <= 1
            best += max(counts.values())
        assert best / len(examples) == pytest.approx(per_kind, abs=5e-4)


def test_kinds_and_sizes_are_configurable():
    task = ShapesTask(image_size=96, grid=3, objects=[2, 3], ood_objects=[4, 5], kinds=["leftmost"], train_size=30,
                      val_size=20, test_ood_size=20)
    examples = task.examples("test_ood")
    assert {e["kind"] for e in examples} == {"leftmost"} and {e["answer"] for e in examples} == set(SHAPES)
    assert examples[0]["image"].size == (96, 96) and isinstance(examples[0]["image"], Image.Image)


@pytest.mark.parametrize("kwargs, key", [
    ({"kinds": ["count", "size"]}, "data.task.kinds"),
    ({"objects": [3, 2]}, "data.task.objects"),
    ({"ood_objects": [5, 20]}, "data.task.ood_objects"),
    ({"grid": 9}, "data.task.grid"),  # cells of 7 px
    ({"objects": [1, 1]}, "data.task.objects"),  # left_of needs two objects
    ({"val_size": -1}, "data.task.val_size"),
    # 4 cells x 4 offsets x 12 looks: 192 distinct one-object images
    ({"image_size": 16, "grid": 2, "kinds": ["colour"], "objects": [1, 1], "ood_objects": [1, 1]}, "data.task"),
])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}"):
        ShapesTask(**{**SMALL, **kwargs})


def test_data_config_builds_a_prompt_datamodule(tmp_path):
    cfg = compose_config(["data=shapes", "data.task.train_size=16", "data.task.val_size=8",
                          "data.task.test_ood_size=8"], tmp_path)
    datamodule = instantiate(cfg.data, tokenizer=build_char_tokenizer())
    datamodule.setup("fit")
    assert datamodule.eval_splits == ("val", "test_ood")
    assert len(datamodule.splits["train"]) == 16 and isinstance(datamodule.splits["val"][0]["image"], Image.Image)
    example = datamodule.splits["val"][0]
    assert datamodule.is_correct(example, example["answer"]) and not datamodule.is_correct(example, "purple")
