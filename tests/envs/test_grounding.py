"""Grounding QA: metrics and parsers on hand cases, questions built from simulator frames answer to the projected
ground truth, and the data config feeds the VLM processor."""
import json

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from posttrain.envs import make_env
from posttrain.envs.demos import collect_demos
from posttrain.envs.grounding import (
    KINDS,
    box_iou,
    episode_frames,
    grounding_metrics,
    parse_box,
    parse_point,
    parse_points,
    point_hit,
    qa,
    resample,
    score,
    trace_error,
)
from posttrain.envs.metaworld import COLORS
from tests.helpers import compose_config

FRAME = {"image": np.zeros((32, 32, 3), np.uint8), "instruction": "push the red puck to the goal", "color": "red",
         "noun": "puck", "trace": [[10.0, 10.0], [12.0, 14.0], [14.0, 18.0], [20.0, 20.0]],
         "projections": {"object": [12.4, 15.6], "goal": [25.0, 5.0], "object_box": [9.6, 12.2, 15.1, 18.9],
                         "gripper": [10.0, 10.0]}}


def test_box_iou_by_hand():
    assert box_iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # touching edges share no area
    assert box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)
    assert box_iou([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0  # empty boxes


def test_point_hit_by_hand():
    box = [10, 10, 20, 20]
    assert point_hit([10, 20], box=box) and point_hit([15, 12], box=box)
    assert not point_hit([9.9, 15], box=box) and not point_hit(None, box=box)
    assert point_hit([3, 4], centre=[0, 0], radius=5) and not point_hit([3, 4.1], centre=[0, 0], radius=5)
    assert point_hit([30, 30], box=box, centre=[31, 30], radius=2)  # either rule


def test_parsers_read_json_lists_and_tuples():
    assert parse_box('{"bbox_2d": [21, 30, 27, 36]}') == [21, 30, 27, 36]
    assert parse_box('[{"bbox_2d": [27, 36, 21, 30], "label": "red puck"}]') == [21, 30, 27, 36]  # reordered
    assert parse_box("the box is [1.5, 2, 3, 4.25] I think") == [1.5, 2, 3, 4.25]
    assert parse_box("[1, 2, 3]") is None and parse_box("no box") is None
    assert parse_points("[(40, 18), (3, -4)]") == [[40, 18], [3, -4]]
    assert parse_points("[[1.5, 2], [3, 4]]") == [[1.5, 2], [3, 4]]
    assert parse_point("nothing here") is None and parse_point("(7, 8)") == [7, 8]


def test_trace_error_and_resampling_by_hand():
    assert resample([[0, 0], [10, 20]], 3) == [[0, 0], [5, 10], [10, 20]]
    assert resample([[4, 4]], 2) == [[4, 4], [4, 4]]
    target = [[0, 0], [10, 0], [20, 0]]
    assert trace_error(target, target) == 0.0
    assert trace_error([[3, 4], [13, 4], [23, 4]], target) == pytest.approx(5.0)
    assert trace_error([[0, 0], [20, 0]], target) == 0.0  # resampled to the target's length first
    assert trace_error([], target) == float("inf")


def test_questions_answer_to_the_ground_truth_and_wrong_answers_score_wrong():
    rng = np.random.default_rng(0)
    examples = [qa(FRAME, kind, rng, trace_points=3) for kind in KINDS for _ in range(2)]
    assert all(score(e, e["response"])["correct"] for e in examples)
    box = next(e for e in examples if e["kind"] == "box")
    assert json.loads(box["response"]) == {"bbox_2d": [10, 12, 15, 19]}
    trace = next(e for e in examples if e["kind"] == "trace")
    assert trace["response"] == "[(10, 10), (13, 16), (20, 20)]"
    assert next(e for e in examples if e["kind"] == "relation")["response"] == "left"  # gripper u 10 < object 12.4
    assert isinstance(box["image"], Image.Image) and box["image"].size == (32, 32)
    wrong = {"box": '{"bbox_2d": [0, 0, 5, 5]}', "point": "[(31, 31)]", "trace": "[(30, 0), (30, 30)]",
             "colour": "blue", "object": "block", "relation": "right"}
    assert not any(score(e, wrong[e["kind"]])["correct"] for e in examples)
    metrics = grounding_metrics(examples, [e["response"] for e in examples])
    assert metrics["grounding/acc"] == 1.0 and metrics["grounding/box_iou50"] == 1.0
    assert metrics["grounding/trace_error"] < 1.0  # rounding only
    half = grounding_metrics(examples, [e["response"] if i % 2 else wrong[e["kind"]] for i, e in enumerate(examples)])
    assert half["grounding/acc"] == 0.5 and half["grounding/point_acc"] == 0.5


def test_simulator_frames_make_questions_about_the_right_pixels():
    env = make_env({"id": "metaworld", "tasks": ["pick-place-v3"], "image_size": 48})
    try:
        [episode], _ = collect_demos(env, [4])
    finally:
        env.close()
    frames = episode_frames(episode, "scene", stride=10)
    assert len(frames) == (len(episode) + 9) // 10
    first = frames[0]
    np.testing.assert_array_equal(first["image"], episode.scene[0])
    assert first["trace"][-1] == episode.projections[-1]["scene"]["gripper"] and len(first["trace"]) == len(episode)
    example = qa(first, "box", np.random.default_rng(0))
    x1, y1, x2, y2 = parse_box(example["response"])
    image = np.asarray(example["image"]).astype(int)
    inside = image[int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]  # the recoloured object fills its box
    mean = inside.reshape(-1, 3).mean(0)
    nearest = min(COLORS, key=lambda c: np.linalg.norm(mean / mean.max() - np.array(COLORS[c][:3])))
    assert nearest == episode.color, (mean, episode.color)


def test_data_config_feeds_the_vlm_processor(tmp_path):
    cfg = compose_config(["model=vlm_tiny", "data=sim_grounding", "+env=metaworld_pick_place", "env.tasks=[push-v3]",
                          "data.task.train_episodes=1", "data.task.eval_episodes=1", "data.task.stride=20",
                          "data.batch_size=4", "env.held_out=[push-v3:orange]"], tmp_path)
    model, processor = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, tokenizer=processor)
    datamodule.setup("fit")
    assert datamodule.eval_splits == ("val", "test_combos")
    assert {e["kind"] for e in datamodule.splits["train"]} == set(KINDS)
    assert {json.dumps(e["target"]) for e in datamodule.splits["test_combos"] if e["kind"] == "colour"} == {
        json.dumps({"word": "orange"})}
    batch = next(iter(datamodule.train_dataloader()))
    assert "image_inputs" in batch and batch["input_ids"].shape[0] == 4
    for row, index in zip(batch["labels"], batch["index"]):  # no answer is cut off by max_length
        assert (row != -100).sum() >= len(datamodule.splits["train"][int(index)]["response"])
    example = datamodule.splits["val"][0]
    assert datamodule.is_correct(example, example["response"])
