"""Evidence for Pairwise-RL's policy claim: pairwise PPO (generative pairwise judge, anchor) against BT-PPO (Bradley-
Terry scalar RM) from the same SFT warm-up, on the same prompts with the same PPO settings and steps, for several
seeds; one table.

    OMP_NUM_THREADS=1 python scripts/compare_pairwise_ppo.py [key=value ...] [--seeds 0 1] [--epochs 2] [--methods ...]

Extra key=value arguments are Hydra overrides applied to every run (put them before a `--methods` list, which would
otherwise take them as method names). Each run is `python train.py
experiment=<pairwise_rl|bt_ppo> seed=<s>`; both share the cached SFT warm-up of a seed (the same as experiment=grpo's)
and cache their reward model under logs/cache. Per method and seed it prints: the reward model's held-out row,
greedy and sampled (avg@k, T = 1) accuracy on val and test_ood at the start and after PPO, and, per training epoch,
the mean RM reward of the rollouts and their gold (verifier) accuracy: RM reward rising while gold accuracy falls is
reward hacking. Writes logs/compare_pairwise_ppo/results.json.
"""
from __future__ import annotations

import argparse
import os
import statistics

from compare_common import ROOT, mean_and_error, print_rows, run_experiment, write_results
from lightning.pytorch import Callback

METHODS = ("pairwise_rl", "bt_ppo")
SPLITS = ("val/accuracy", "test_ood/accuracy", "val/accuracy_sampled", "test_ood/accuracy_sampled")
TRACED = ("train/reward", "train/accuracy", "train/reward_gap", "train/kl", "train/value_error", "train/clip_fraction")


class EpochTrace(Callback):
    """Per training epoch, the mean of each traced training metric over its rollout steps (read after every batch,
    whatever the logger's interval)."""

    def __init__(self):
        self.epochs: list[dict[str, list[float]]] = []

    def on_train_epoch_start(self, trainer, module):
        self.epochs.append({key: [] for key in TRACED})

    def on_train_batch_end(self, trainer, module, *args):
        for key in TRACED:
            if key in trainer.callback_metrics:
                self.epochs[-1][key].append(float(trainer.callback_metrics[key]))

    def means(self) -> list[dict[str, float]]:
        return [{k: statistics.mean(v) for k, v in epoch.items() if v} for epoch in self.epochs]


def run(method: str, seed: int, epochs: int, overrides: list[str], out: str) -> dict:
    result = run_experiment(method, method, seed, out, [
        f"trainer.max_epochs={epochs}", f"paths.cache_dir={os.path.join(ROOT, 'logs', 'cache')}", *overrides],
        callbacks={"trace": {"_target_": "__main__.EpochTrace"}})
    trace = next(c for c in result["trainer"].callbacks if isinstance(c, EpochTrace))
    rows = result["rows"]
    reward_model = next(r for r in rows if r["run"] == result["cfg"].stages.reward_model.name)
    start = [r for r in rows if r.get("epoch") == -1 and r["run"].startswith(method)]
    return {"reward_model": reward_model, "start": start[0], "final": rows[-1], "epochs": trace.means()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_pairwise_ppo"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)} (overrides go before --methods)")
    results: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for method in args.methods:
            results.setdefault(method, {})[seed] = run(method, seed, args.epochs, args.overrides, args.out)
            print_tables(results, args.seeds)  # partial tables as runs finish
    write_results(args.out, results, seeds=args.seeds, epochs=args.epochs, overrides=args.overrides)


def print_tables(results: dict, seeds: list[int]) -> None:
    # policy accuracy: start (the shared SFT model) and after PPO
    lines = []
    for method, by_seed in results.items():
        for stage in ("start", "final"):
            present = [s for s in seeds if s in by_seed]
            cells = [method, stage, "/".join(str(by_seed[s][stage].get("step", "")) for s in present)]
            for split in SPLITS:
                values = [by_seed[s][stage][split] for s in present if split in by_seed[s][stage]]
                cells += [" ".join(f"{v:.3f}" for v in values), mean_and_error(values)]
            lines.append(cells)
    header = ["method", "policy", "steps"]
    for split in SPLITS:
        name = split.replace("/accuracy", "").replace("_sampled", " sampled")
        header += [f"{name} per seed", f"{name} mean ± se"]
    print_rows(header, lines)
    # training rollouts per epoch: RM reward against gold accuracy (reward hacking: the first up, the second down)
    lines = []
    for method, by_seed in results.items():
        for seed in seeds:
            if seed not in by_seed:
                continue
            for epoch, means in enumerate(by_seed[seed]["epochs"]):
                lines.append([method, str(seed), str(epoch + 1), *(f"{means[k]:.4f}" if k in means else ""
                                                                   for k in TRACED)])
    print_rows(["method", "seed", "epoch", *(k.replace("train/", "rollout ") for k in TRACED)], lines)
    # the reward models' held-out rows
    lines = []
    for method, by_seed in results.items():
        for seed in seeds:
            if seed in by_seed:
                row = by_seed[seed]["reward_model"]
                lines.append([method, str(seed), ", ".join(f"{k}={v:.3f}" for k, v in row.items()
                                                           if "/" in k and isinstance(v, float))])
    print_rows(["method", "seed", "reward model (held-out)"], lines)
    print(flush=True)


if __name__ == "__main__":
    main()
