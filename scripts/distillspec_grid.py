"""DistillSpec's recipe grid: divergence x training-data source, every cell from the same undistilled draft.

    OMP_NUM_THREADS=1 python scripts/distillspec_grid.py [--seeds 0 1] [--divergences forward_kl reverse_kl jsd tvd]
        [--sources fixed student teacher] [hydra overrides ...]

Each cell runs `experiment=distillspec` with `method.divergence` and the data source set, the control stage off and
validation only after the last epoch, so all cells train the same number of steps from the same cached target and
the same cached undistilled draft (the `teacher` and `warmup` stages are keyed by the global seed, which stays
fixed). A "seed" here is `method.seed`: it draws the on-policy / target-generated samples, the data-source coin flips
and the sampled speculative evaluation; the target, the undistilled draft and the batch order are shared by all seeds
(a fixed-data cell therefore trains identically across seeds and only its sampled evaluation differs).

The first cell of every seed also records the undistilled draft (its validation before training). Prints one table:
greedy α / τ / speedup and sampled α / τ / speedup / 1 - TVD at the decided positions (the paper's α estimate),
then the mean ± sd over seeds. Writes logs/distillspec_grid/results.json. With `--vary-draft` the seed also sets
`model.seed`, so the draft's initialisation and warm-up differ between seeds too (the target stays shared).
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

# data source -> (λ1 = method.fixed_fraction, λ2 = method.student_fraction)
SOURCES = {"fixed": (1.0, 1.0), "student": (0.0, 1.0), "teacher": (0.0, 0.0)}
METRICS = {"greedy α": "spec/greedy_acceptance_rate", "greedy τ": "spec/greedy_tokens_per_call",
           "greedy ×": "spec/greedy_speedup", "greedy γ": "spec/greedy_best_gamma",
           "sample α": "spec/sample_acceptance_rate", "sample τ": "spec/sample_tokens_per_call",
           "sample ×": "spec/sample_speedup", "sample γ": "spec/sample_best_gamma",
           "sample 1−TVD": "spec/sample_expected_acceptance", "val 1−TVD": "val/expected_acceptance",
           "draft acc": "val/accuracy"}


def run_cell(divergence: str, source: str, seed: int, with_start: bool, overrides: list[str], out: str,
             vary_draft: bool = False) -> list[dict]:
    """Trains one cell; returns its final row (and, with `with_start`, the undistilled draft's row first).
    With `vary_draft` the seed also initialises the draft (`model.seed`), so each seed has its own warm-up."""
    fixed, student = SOURCES[source]
    if vary_draft:
        overrides = [f"model.seed={seed}", *overrides]
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=distillspec", "name=distillspec", "logger=csv", "stages.main.save_dir=null",
            "stages.control=null",
            f"paths.output_dir={out}/seed{seed}/{divergence}-{source}", "~callbacks.progress_bar",
            "~callbacks.model_checkpoint", "+trainer.enable_progress_bar=false",
            f"method.divergence={divergence}", f"method.fixed_fraction={fixed}", f"method.student_fraction={student}",
            f"method.seed={seed}", f"method.evaluate_at_start={with_start}",
            f"trainer.num_sanity_val_steps={-1 if with_start else 0}", *overrides])
    # only the final validation: the grid compares the end points, and each validation times decoding
    cfg.trainer.check_val_every_n_epoch = cfg.trainer.max_epochs
    rows = [r for r in train(cfg)["rows"] if r["run"].startswith("distillspec")]
    cell = {"seed": seed, "divergence": divergence, "source": source}
    start = [{**cell, "divergence": "—", "source": "undistilled", **r} for r in rows if r["run"].endswith("(start)")]
    return start + [{**cell, **rows[-1]}]


def table(rows: list[dict]) -> str:
    header = ["draft", "seed", *METRICS]
    body = []
    for r in rows:
        body.append([label(r), str(r["seed"]), *(f"{r[m]:.3f}" if m in r else "" for m in METRICS.values())])
    for key in dict.fromkeys(label(r) for r in rows):
        mine = [r for r in rows if label(r) == key]
        if len(mine) > 1:
            body.append([key, "mean ± sd", *(mean_sd([r[m] for r in mine]) if all(m in r for r in mine)
                                             else "" for m in METRICS.values())])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body])


def mean_sd(values: list[float]) -> str:
    """"mean ± sample standard deviation" to 3 decimals."""
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def label(row: dict) -> str:
    return "undistilled" if row["source"] == "undistilled" else f"{row['divergence']}, {row['source']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--divergences", nargs="+", default=["forward_kl", "reverse_kl", "jsd", "tvd"])
    parser.add_argument("--sources", nargs="+", default=["fixed", "student"], choices=list(SOURCES))
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "distillspec_grid"))
    parser.add_argument("--vary-draft", action="store_true",
                        help="the seed also initialises the draft (model.seed): one warm-up per seed")
    parser.add_argument("overrides", nargs="*", help="hydra overrides applied to every cell")
    args = parser.parse_args()
    rows: list[dict] = []
    for seed in args.seeds:
        for i, (divergence, source) in enumerate((d, s) for d in args.divergences for s in args.sources):
            rows += run_cell(divergence, source, seed, i == 0, args.overrides, args.out, args.vary_draft)
            print("\n" + table(rows) + "\n", flush=True)  # partial tables survive an interrupted grid
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "results.json"), "w") as handle:
                json.dump({"args": vars(args), "rows": rows, "table": table(rows)}, handle, indent=1)
    rows.sort(key=lambda r: (r["source"] != "undistilled", r["divergence"], r["source"], r["seed"]))
    text = table(rows)
    print("\n" + text + "\n", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump({"args": vars(args), "rows": rows, "table": text}, handle, indent=1)


if __name__ == "__main__":
    main()
