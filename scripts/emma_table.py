"""The arms' table of `experiment=emma` runs, mean ± sd over the runs (one per seed), from their TensorBoard scalars.

    python scripts/emma_table.py logs/emma/runs/<run> [logs/emma/runs/<run> ...] [--json out.json]
        [--blind logs/cache/demos-<hash> logs/cache/frames_<split>-<hash> ...]

For each arm (a TensorBoard folder of the run) the last logged value of every closed-loop measure (`<split>/success`,
`reached`, `grasped`, `distance`) and of the offline action error (`offline/<split>/action_mse`); a run without an arm
is left out of that arm's mean.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datamodules.emma import normalised_chunks  # noqa: E402
from posttrain.envs.demos import read_demos  # noqa: E402
from posttrain.vla.evaluator import chunk_error  # noqa: E402

ARMS = {"real_only": "real only", "uniform": "real + generated (uniform)", "main": "real + generated + adamix",
        "geometry_breaking": "real + geometry-breaking", "oracle": "real + oracle", "augmented": "real + augmented"}
SPLITS = ("demo", "in_domain", "held_out_objects", "held_out_background", "held_out_lighting")
MEASURES = ("success", "reached", "grasped", "distance")


def last_scalars(folder: str) -> dict[str, float]:
    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def collect(runs: list[str]) -> dict[str, list[dict[str, float]]]:
    """{arm: [its last scalars in each run that has it]}."""
    table = {arm: [] for arm in ARMS}
    for run in runs:
        for arm in ARMS:
            folder = os.path.join(run, "tensorboard", arm)
            if os.path.isdir(folder):
                table[arm].append(last_scalars(folder))
    return table


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def rows(table, tag_of, digits: int) -> list[str]:
    lines = ["| Arm | " + " | ".join(SPLITS) + " |", "|---" * (len(SPLITS) + 1) + "|"]
    for arm, runs in table.items():
        if runs:
            cells = [cell([r[tag_of(s)] for r in runs if tag_of(s) in r], digits) for s in SPLITS]
            lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    return lines


def blind_error(demos: str, frames: str, chunk: int = 4, stride: int = 2) -> float:
    """The offline action error of a predictor that sees nothing: the training chunks' mean (per step and
    dimension, over real steps) for every frame of `frames` (normalised by the demonstrations' statistics, as the
    arms' offline splits)."""
    real = read_demos(demos)
    q01, q99 = torch.tensor(real.stats["action"]["q01"]), torch.tensor(real.stats["action"]["q99"])
    train, train_mask = normalised_chunks(real.episodes, q01, q99, chunk)
    train_mask = train_mask.float()
    mean = (train * train_mask[..., None]).sum(0) / train_mask.sum(0).clamp(min=1)[..., None]  # (H, A)
    held_out, mask = normalised_chunks(read_demos(frames).episodes, q01, q99, chunk)
    return float(chunk_error(mean.expand_as(held_out[::stride]), held_out[::stride], mask[::stride].float()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--json", default=None, help="also write {arm: [scalars per run]} here")
    parser.add_argument("--blind", nargs=2, action="append", metavar=("DEMOS", "FRAMES"), default=[],
                        help="also print the offline error of the training chunks' mean (a predictor that sees "
                             "nothing) on a frame stage's folder, normalised by a demos folder; repeatable")
    parser.add_argument("--chunk", type=int, default=4, help="the runs' model.chunk (for --blind)")
    parser.add_argument("--stride", type=int, default=2, help="the runs' data.frame_stride (for --blind)")
    args = parser.parse_args()
    for demos, frames in args.blind:
        print(f"blind predictor on {frames}: {blind_error(demos, frames, args.chunk, args.stride):.4f}")
    table = collect(args.runs)
    print(f"runs: {len(args.runs)}; cells are mean ± sd over them\n")
    for measure in MEASURES:
        print(f"closed loop, {measure}:")
        print("\n".join(rows(table, lambda s, m=measure: f"{s}/{m}", 3)) + "\n")
    print("offline action error (normalised units, lower is better):")
    print("\n".join(rows(table, lambda s: f"offline/{s}/action_mse", 4)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
