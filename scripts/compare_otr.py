"""OTR vs SFT from the same start, the same data and the same number of optimizer steps, over several seeds.

    OMP_NUM_THREADS=1 python scripts/compare_otr.py [--seeds 0 1] [hydra overrides ...]

Each seed runs `experiment=otr` (shared cached SFT warm-up, OTR as the main stage, SFT as the control stage) and the
final evaluation of both stages becomes one row of the printed table (exact-match accuracy and reference NLL on `val`
and `test_ood`), followed by the mean over seeds. Writes logs/compare_otr/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hydra import compose, initialize_config_dir  # noqa: E402

from posttrain.run import register_resolvers, train  # noqa: E402

METRICS = ("val/accuracy", "test_ood/accuracy", "val/nll", "test_ood/nll")


def run_seed(seed: int, overrides: list[str], out: str) -> list[dict]:
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=otr", f"seed={seed}", "name=otr", "logger=csv",
                                                      "save_model=false", f"paths.output_dir={out}/seed{seed}",
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
    stage_names = {cfg.name: f"otr (K={cfg.method.k}, tau={cfg.method.temperature}, beta={cfg.method.beta})",
                   cfg.control.name: "sft"} if cfg.get("control") else {cfg.name: "otr"}
    labelled += [{"method": stage_names.get(k, k), **v} for k, v in finals.items()]
    return [{"seed": seed, **r} for r in labelled]


def table(rows: list[dict]) -> str:
    header = ["method", "seed", "step", *METRICS]
    body = [[r["method"], str(r["seed"]), str(r.get("step", "")), *(f"{r[m]:.4f}" for m in METRICS)] for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        body.append([method, "mean", "", *(f"{sum(r[m] for r in mine) / len(mine):.4f}" for m in METRICS)])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_otr"))
    parser.add_argument("overrides", nargs="*", help="hydra overrides applied to every run")
    args = parser.parse_args()
    rows = [r for seed in args.seeds for r in run_seed(seed, args.overrides, args.out)]
    rows.sort(key=lambda r: (r["method"] != "start (warm-up)", r["method"], r["seed"]))
    text = table(rows)
    print("\n" + text + "\n", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump({"overrides": args.overrides, "rows": rows, "table": text}, handle, indent=1)


if __name__ == "__main__":
    main()
