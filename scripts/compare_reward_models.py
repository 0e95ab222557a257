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
import os

from compare_common import ROOT, mean_and_error, print_rows, run_experiment, write_results

METRICS = ("pair_accuracy", "pair_accuracy_one_order", "ece", "brier", "position_consistency")
SHORT = {"pair_accuracy": "acc", "pair_accuracy_one_order": "acc1", "ece": "ece", "brier": "brier",
         "position_consistency": "pos"}


def run(name: str, seed: int, overrides: list[str], out: str) -> list[dict]:
    return run_experiment("pairwise_rm", name, seed, out, overrides)["rows"]


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
            rows = run("pairwise_rm_no_swap", seed, ["method.swap_augmentation=false", "stages.control=null",
                                                     *args.overrides], args.out)
            results.setdefault("pairwise RM, no swap", {})[seed] = final(rows, "pairwise_rm_no_swap")
    for split in ("val", "test_ood"):
        print_table(results, args.seeds, split)
    write_results(args.out, results, seeds=args.seeds, overrides=args.overrides)


def print_table(results: dict, seeds: list[int], split: str) -> None:
    header = ["RM", "steps", *(f"{SHORT[m]} s{s}" for m in METRICS for s in seeds),
              *(f"{SHORT[m]} mean" for m in METRICS)]
    lines = []
    for name, by_seed in results.items():
        cells = [name, "/".join(str(by_seed[s].get("step", "")) for s in seeds)]
        cells += [f"{by_seed[s][f'{split}/{m}']:.3f}" for m in METRICS for s in seeds]
        cells += [mean_and_error([by_seed[s][f"{split}/{m}"] for s in seeds]) for m in METRICS]
        lines.append(cells)
    print(f"\n{split}: acc = pair accuracy (symmetrised), acc1 = one order, pos = mean |P(A≻B) + P(B≻A) − 1|")
    print_rows(header, lines)


if __name__ == "__main__":
    main()
