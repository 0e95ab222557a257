"""OTR vs SFT from the same start, the same data and the same number of optimizer steps, over several seeds.

    OMP_NUM_THREADS=1 python scripts/compare_otr.py [--seeds 0 1 2] [hydra overrides ...]

Each seed runs `experiment=otr` (cached SFT warm-up on task A, then OTR as the main stage and SFT as the control
stage on task B) and the final evaluation of each stage becomes one row of the printed table: exact-match accuracy,
reference NLL and predictive entropy on `val` (B), `test_ood` (B, shifted) and `retain` (A), as far as the run logs
them, followed by the mean ± sd over seeds (sample standard deviation). Ablations pass overrides, e.g.
`method.beta=0 stages.control=null` (no control).
Writes <out>/results.json (default logs/compare_otr).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hydra import compose, initialize_config_dir  # noqa: E402

from posttrain.pipeline import register_resolvers, train  # noqa: E402
from posttrain.utils.machine import machine_info  # noqa: E402

SPLITS = ("val", "test_ood", "retain")
NAMES = ("accuracy", "nll", "entropy")


def run_seed(seed: int, overrides: list[str], out: str) -> list[dict]:
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=otr", f"seed={seed}", "name=otr", "logger=csv",
                                                      "stages.main.save_dir=null", f"paths.output_dir={out}/seed{seed}",
                                                      "~callbacks.progress_bar", "+trainer.enable_progress_bar=false",
                                                      *overrides])
    rows = train(cfg)["rows"]
    start = [r for r in rows if r["run"] == "sft (start)"]
    finals = {}
    for r in rows:  # the last evaluation of each stage
        stage = r["run"].split(" epoch")[0].split(" iteration")[0]
        if stage != "sft (start)":
            finals[stage] = r
    labelled = [{"method": "start (warm-up)", **start[0]}] if start else []
    lr = f"lr={cfg.method.optimizer.lr:g}"
    otr = (f"otr ({cfg.method.estimator if cfg.method.estimator != 'sampled' else f'K={cfg.method.k}'}, "
           f"tau={cfg.method.temperature}, beta={cfg.method.beta}, {lr})")
    stage_names = {cfg.name: otr, **({cfg.stages.control.name: f"sft ({lr})"} if cfg.stages.get("control") else {})}
    labelled += [{"method": stage_names.get(k, k), **v} for k, v in finals.items()]
    return [{"seed": seed, **r} for r in labelled]


def logged_metrics(rows: list[dict]) -> list[str]:
    """`<split>/<name>` columns that some row has, accuracy first, then NLL, then entropy."""
    return [f"{s}/{n}" for n in NAMES for s in SPLITS if any(f"{s}/{n}" in r for r in rows)]


def cell(value) -> str:
    return "" if value is None else f"{value:.3f}"


def mean_sd(values: list) -> str:
    """`mean ± sd` over seeds (sample standard deviation; the mean alone for one seed)."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: list[dict]) -> str:
    metrics = logged_metrics(rows)
    header = ["method", "seed", "step", *metrics]
    body = [[r["method"], str(r["seed"]), str(r.get("step", "")), *(cell(r.get(m)) for m in metrics)] for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        body.append([method, "mean ± sd", "", *(mean_sd([r.get(m) for r in mine]) for m in metrics)])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def merged_rows(paths: list[str]) -> list[dict]:
    """The rows of several results.json files, each (method, seed) once (the shared warm-up row repeats)."""
    rows = {}
    for path in paths:
        with open(path) as handle:
            for r in json.load(handle)["rows"]:
                rows.setdefault((r["method"], r["seed"]), r)
    return sorted(rows.values(), key=lambda r: (r["method"] != "start (warm-up)", r["method"], r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_otr"))
    parser.add_argument("--merge", nargs="+", metavar="RESULTS_JSON",
                        help="run nothing: print one table of the rows of earlier results.json files")
    parser.add_argument("overrides", nargs="*", help="hydra overrides applied to every run")
    args = parser.parse_args()
    if args.merge:
        print("\n" + table(merged_rows(args.merge)) + "\n", flush=True)
        return
    rows = [r for seed in args.seeds for r in run_seed(seed, args.overrides, args.out)]
    rows.sort(key=lambda r: (r["method"] != "start (warm-up)", r["method"], r["seed"]))
    text = table(rows)
    print("\n" + text + "\n", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump({"overrides": args.overrides, "machine": machine_info(), "rows": rows, "table": text}, handle,
                  indent=1)


if __name__ == "__main__":
    main()
