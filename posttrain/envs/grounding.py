"""Spatial grounding QA from simulator states (InternVLA-M1's stage-1 data), its answer parsers and its metrics.

Every frame of an expert episode comes with the simulator's own image-space ground truth (`info["projections"]`):
the object's box, the object and goal centres, and the gripper, whose later positions in the episode are the trace.
Questions are task-type specific and answers use absolute pixel coordinates of the image as given (Qwen2.5-VL's
convention; a processor that resizes images must scale them alike), rounded to integers, in JSON:

    box      "Locate the red puck in the image; answer with its bounding box as JSON [x1, y1, x2, y2]."
             -> {"bbox_2d": [21, 30, 27, 36]}
    point    "Point to the goal of the task: push the red puck to the goal. Answer as a list of (x, y) tuples."
             -> [(40, 18)]                    (the goal; or, asked for the object, the object's centre)
    trace    "Predict the end-effector trajectory to push the red puck to the goal, as a list of (x, y) points."
             -> [(33, 20), (30, 26), (27, 31), (35, 25), (40, 19)]   (the expert's gripper, `trace_points` steps)
    colour   "What colour is the puck?" -> "red"
    object   "What object is on the table, a puck or a block?" -> "puck"
    relation "Is the gripper left or right of the puck in the image?" -> "left" | "right"

Metrics: box IoU >= 0.5 (`box_iou`), point accuracy (the point inside the object's box for object points, within
`radius` px of the goal for goal points: the goal is a marker, not an extended object), trace error (mean pixel
distance after resampling both traces to the same length), exact match for the general questions.
"""
from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

KINDS = ("box", "point", "trace", "colour", "object", "relation")
NUMBER = r"-?\d+(?:\.\d+)?"
PAIR = re.compile(rf"[\(\[]\s*({NUMBER})\s*,\s*({NUMBER})\s*[\)\]]")
QUAD = re.compile(rf"\[\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*\]")


# ---- frames -------------------------------------------------------------------------------------------------------
def episode_frames(episode, view: str = "scene", stride: int = 4) -> list[dict]:
    """Every `stride`-th frame of an episode (posttrain.envs.demos.Episode, from `collect_episode` or
    `read_demos`) with what the questions need: the view's image, its projections and the gripper's path from
    that frame to the episode's end."""
    images = getattr(episode, view)
    path = [p[view]["gripper"] for p in episode.projections]
    return [{"image": images[t], "projections": episode.projections[t][view], "trace": path[t:],
             "instruction": episode.instruction, "color": episode.color, "noun": noun_of(episode.instruction)}
            for t in range(0, len(episode), stride)]


def noun_of(instruction: str) -> str:
    return "block" if " block" in instruction else "puck"


# ---- questions ----------------------------------------------------------------------------------------------------
def qa(frame: dict, kind: str, rng: np.random.Generator, trace_points: int = 5) -> dict:
    """One example {"prompt", "response", "answer", "image" (PIL), "kind", "target"} of `kind` about `frame`;
    `target` is the ground truth the metrics compare with (box, point, trace or word)."""
    p, name = frame["projections"], f"{frame['color']} {frame['noun']}"
    if kind == "box":
        box = [round(v) for v in p["object_box"]]
        prompt = f"Locate the {name} in the image; answer with its bounding box as JSON [x1, y1, x2, y2]."
        response, target = json.dumps({"bbox_2d": box}), {"box": p["object_box"]}
    elif kind == "point":
        if rng.random() < 0.5:
            prompt = f"Point to the goal of the task: {frame['instruction']}. Answer as a list of (x, y) tuples."
            point, target = p["goal"], {"point": p["goal"], "of": "goal"}
        else:
            prompt = f"Point to the {name}. Answer as a list of (x, y) tuples."
            point, target = p["object"], {"point": p["object"], "box": p["object_box"], "of": "object"}
        response = points_text([point])
    elif kind == "trace":
        trace = resample(frame["trace"], trace_points)
        prompt = f"Predict the end-effector trajectory to {frame['instruction']}, as a list of (x, y) points."
        response, target = points_text(trace), {"trace": trace}
    elif kind == "colour":
        prompt, response = f"What colour is the {frame['noun']}?", frame["color"]
        target = {"word": response}
    elif kind == "object":
        prompt, response = "What object is on the table, a puck or a block?", frame["noun"]
        target = {"word": response}
    elif kind == "relation":
        prompt = f"Is the gripper left or right of the {frame['noun']} in the image?"
        response = "left" if p["gripper"][0] < p["object"][0] else "right"
        target = {"word": response}
    else:
        raise ValueError(f"unknown grounding kind {kind!r}; kinds: {KINDS}")
    return {"prompt": prompt, "response": response, "answer": response, "image": Image.fromarray(frame["image"]),
            "kind": kind, "target": target}


def points_text(points) -> str:
    return "[" + ", ".join(f"({round(u)}, {round(v)})" for u, v in points) + "]"


def resample(path, count: int) -> list[list[float]]:
    """`count` points evenly spaced in time along `path` (N, 2), first and last kept (linear interpolation)."""
    path = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    if len(path) == 1:
        return np.repeat(path, count, axis=0).tolist()
    at = np.linspace(0, len(path) - 1, count)
    return np.stack([np.interp(at, np.arange(len(path)), path[:, d]) for d in (0, 1)], axis=-1).tolist()


# ---- parsing model answers ----------------------------------------------------------------------------------------
def parse_box(text: str) -> list[float] | None:
    """The first bracketed [x1, y1, x2, y2] of an answer (the value of Qwen2.5-VL's JSON `bbox_2d`, or a bare
    list); None when there is none. Corners are put in order (x1 <= x2, y1 <= y2)."""
    match = QUAD.search(text)
    if match is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def parse_points(text: str) -> list[list[float]]:
    """Every (x, y) or [x, y] pair in an answer, in order."""
    return [[float(u), float(v)] for u, v in PAIR.findall(text)]


def parse_point(text: str) -> list[float] | None:
    points = parse_points(text)
    return points[0] if points else None


# ---- metrics ------------------------------------------------------------------------------------------------------
def box_iou(a, b) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when either is empty)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def point_hit(point, box=None, centre=None, radius: float = 0.0) -> bool:
    """The point lies inside `box` (edges included), or within `radius` px of `centre`."""
    if point is None:
        return False
    inside = box is not None and box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]
    near = centre is not None and float(np.hypot(point[0] - centre[0], point[1] - centre[1])) <= radius
    return bool(inside or near)


def trace_error(predicted, target) -> float:
    """Mean pixel distance between two traces after resampling the prediction to the target's length; inf for an
    empty prediction."""
    if not predicted:
        return float("inf")
    ours = np.asarray(resample(predicted, len(target)))
    return float(np.linalg.norm(ours - np.asarray(target, dtype=np.float64), axis=-1).mean())


def score(example: dict, completion: str, radius: float = 4.0, trace_tolerance: float = 6.0) -> dict:
    """The metrics of one answer to a grounding example: {"correct": bool, and per kind "iou" / "trace_error"}.
    Box: IoU >= 0.5; point: inside the object's box or within `radius` px of the goal; trace: mean error <=
    `trace_tolerance` px; general questions: the word, case and surrounding punctuation ignored."""
    kind, target = example["kind"], example["target"]
    if kind == "box":
        box = parse_box(completion)
        iou = box_iou(box, target["box"]) if box is not None else 0.0
        return {"correct": iou >= 0.5, "iou": iou}
    if kind == "point":
        box = target.get("box") if target["of"] == "object" else None
        return {"correct": point_hit(parse_point(completion), box=box, centre=target["point"], radius=radius)}
    if kind == "trace":
        error = trace_error(parse_points(completion), target["trace"])
        return {"correct": error <= trace_tolerance, "trace_error": error}
    return {"correct": completion.strip().strip(".!").lower() == target["word"]}


def grounding_metrics(examples: list[dict], completions: list[str], prefix: str = "grounding/", **kwargs) -> dict:
    """Means over a set: `box_iou50` (share of boxes with IoU >= 0.5), `box_iou`, `point_acc`, `trace_acc`,
    `trace_error` (finite errors only), `general_acc` (colour, object, relation), `acc` (everything)."""
    scores = [(e["kind"], score(e, c, **kwargs)) for e, c in zip(examples, completions)]
    out = {"acc": [s["correct"] for _, s in scores],
           "box_iou50": [s["correct"] for k, s in scores if k == "box"],
           "box_iou": [s["iou"] for k, s in scores if k == "box"],
           "point_acc": [s["correct"] for k, s in scores if k == "point"],
           "trace_acc": [s["correct"] for k, s in scores if k == "trace"],
           "trace_error": [s["trace_error"] for k, s in scores if k == "trace" and np.isfinite(s["trace_error"])],
           "general_acc": [s["correct"] for k, s in scores if k in ("colour", "object", "relation")]}
    return {prefix + name: float(np.mean(values)) for name, values in out.items() if values}
