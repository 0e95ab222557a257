"""Evidence for Pairwise-RL's reward model: the pairwise generative RM against the Bradley–Terry RM, from the same
SFT start, on the same pairs with the same optimizer, schedule and steps, for several seeds; one table.

    OMP_NUM_THREADS=1 python scripts/compare_reward_models.py [--seeds 0 1] [--no-ablation] [key=value ...]

Each seed runs `python train.py experiment=pairwise_rm seed=<s>` (warm-up SFT, cached; the pairwise RM; the BT RM as
its control stage) and, unless --no-ablation, the pairwise RM trained without swap augmentation (each pair in one
random order), which shows what the augmentation does to position consistency. Extra key=value arguments are Hydra
overrides applied to every run. Prints, per RM, each seed's final value and the mean ± standard error over seeds
(sd / sqrt(n)) of held-out pair accuracy (symmetrised), one-order accuracy, ECE, Brier and position consistency on
val and test_ood; writes logs/compare_reward_models/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from posttrain.run import register_resolvers, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("pair_accuracy", "pair_accuracy_one_order", "ece", "brier", "position_consistency")
SHORT = {"pair_accuracy": "acc", "pair_accuracy_one_order": "acc1", "ece": "ece", "brier": "brier",
         "position_consistency": "pos"}


def run(name: str, seed: int, overrides: list[str], out: str) -> list[dict]:
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=pairwise_rm", f"seed={seed}", "logger=csv", "~callbacks.progress_bar", "save_model=false",
            f"paths.log_dir={out}", f"paths.output_dir={out}/{name}-seed{seed}", *overrides])
    with open_dict(cfg):
        cfg.name = name
        cfg.trainer.enable_progress_bar = False
    return train(cfg)["rows"]


def final(rows: list[dict], prefix: str) -> dict:
    return [r for r in rows if r["run"].startswith(prefix + " epoch")][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--no-ablation", action="store_true", help="skip the pairwise RM without swap augmentation")
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_reward_models"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        rows = run("pairwise_rm", seed, args.overrides, args.out)
        results.setdefault("pairwise RM (start)", {})[seed] = next(r for r in rows if r["run"] == "pairwise_rm (start)")
        results.setdefault("pairwise RM", {})[seed] = final(rows, "pairwise_rm")
        results.setdefault("BT RM", {})[seed] = final(rows, "bt_rm")
        if not args.no_ablation:
            rows = run("pairwise_rm_no_swap", seed, ["method.swap_augmentation=false", "control=null",
                                                     *args.overrides], args.out)
            results.setdefault("pairwise RM, no swap", {})[seed] = final(rows, "pairwise_rm_no_swap")
    for split in ("val", "test_ood"):
        print_table(results, args.seeds, split)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump({"seeds": args.seeds, "overrides": args.overrides,
                   "results": {m: {str(s): r for s, r in by_seed.items()} for m, by_seed in results.items()}},
                  handle, indent=1)


def mean_and_error(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def print_table(results: dict, seeds: list[int], split: str) -> None:
    header = ["RM", "steps", *(f"{SHORT[m]} s{s}" for m in METRICS for s in seeds), *(f"{SHORT[m]} mean" for m in METRICS)]
    lines = []
    for name, by_seed in results.items():
        cells = [name, "/".join(str(by_seed[s].get("step", "")) for s in seeds)]
        cells += [f"{by_seed[s][f'{split}/{m}']:.3f}" for m in METRICS for s in seeds]
        cells += [mean_and_error([by_seed[s][f"{split}/{m}"] for s in seeds]) for m in METRICS]
        lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(f"\n{split}: acc = pair accuracy (symmetrised), acc1 = one order, pos = mean |P(A≻B) + P(B≻A) − 1|")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    print(flush=True)


if __name__ == "__main__":
    main()
