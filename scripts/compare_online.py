"""Evidence for the online methods: SFT (the shared warm-up checkpoint), RFT, GRPO and NFT from the same
under-trained SFT model, on the same prompts with the same number of samples, for several seeds; one table.

    OMP_NUM_THREADS=1 python scripts/compare_online.py [--seeds 0 1] [--epochs 5] [key=value ...]

Extra key=value arguments are Hydra overrides applied to every run (e.g. method.num_samples=16). Each run is
`python train.py experiment=<method> seed=<s>`; experiments with identical model, data and warm-up config reuse one
cached SFT checkpoint per seed. Prints per-seed values, the mean and its standard error over seeds
(sd / sqrt(n)) of greedy exact match and, where the experiment logs it, sampled accuracy (avg@k at T = 1) on val
and test_ood, and the optimizer steps made; writes logs/compare_online/results.json.
"""
from __future__ import annotations

import argparse
import os

from compare_common import ROOT, mean_and_error, print_rows, run_experiment, write_results

METHODS = ("rft", "grpo", "nft")
SPLITS = ("val/accuracy", "test_ood/accuracy", "val/accuracy_sampled", "test_ood/accuracy_sampled")


def run(method: str, seed: int, epochs: int, overrides: list[str], out: str) -> list[dict]:
    return run_experiment(method, method, seed, out, [f"trainer.max_epochs={epochs}", *overrides])["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_online"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results: dict[str, dict[int, dict]] = {"sft": {}}
    for seed in args.seeds:
        for method in args.methods:
            rows = run(method, seed, args.epochs, args.overrides, args.out)
            # the start row: the same warm-up checkpoint for every method of this seed; the method's own evaluation
            # of it (epoch -1) when there is one, since that one has the method's metrics (sampled accuracy)
            start = [r for r in rows if r.get("epoch") == -1] or rows[:1]
            results["sft"][seed] = start[0]
            results.setdefault(method, {})[seed] = rows[-1]
    print_table(results, args.seeds)
    write_results(args.out, results, seeds=args.seeds, epochs=args.epochs, overrides=args.overrides)


def print_table(results: dict, seeds: list[int]) -> None:
    splits = [split for split in SPLITS if any(split in r for by_seed in results.values() for r in by_seed.values())]
    short = {split: split.replace("/accuracy", "").replace("_sampled", " sampled") for split in splits}
    header = ["method", "steps", *(f"{short[split]} s{s}" for split in splits for s in seeds),
              *(f"{short[split]} mean" for split in splits)]
    lines = []
    for method, by_seed in results.items():
        cells = [method, "/".join(str(by_seed[s].get("step", "")) for s in seeds if s in by_seed)]
        cells += [f"{by_seed[s][split]:.3f}" if s in by_seed and split in by_seed[s] else ""
                  for split in splits for s in seeds]
        cells += [mean_and_error([by_seed[s][split] for s in seeds if s in by_seed and split in by_seed[s]])
                  for split in splits]
        lines.append(cells)
    print_rows(header, lines)


if __name__ == "__main__":
    main()
