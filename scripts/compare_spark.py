"""Evidence for SPARK: SPARK against policy-only GRPO and the start model, from the same warm-up, on the same solve
prompts with the same number of solve updates, for several seeds; one table.

    OMP_NUM_THREADS=1 python scripts/compare_spark.py [--seeds 0 1] [key=value ...]

Each seed is one `python train.py experiment=spark seed=<s>` run: the cached warm-up (the start model), SPARK (main
stage) and GRPO (its control stage: the same module with method.recycle=false). Extra key=value arguments are Hydra
overrides applied to the run (e.g. trainer.max_epochs=5). Prints, per metric, the start model's, GRPO's and SPARK's
value after the last epoch per seed and the mean ± standard error over seeds (sd / sqrt(n)):
solve greedy and sampled accuracy on val and test_ood; as a judge of its own held-out sampled answers, pointwise
balanced accuracy, ECE and the fraction judged correct, and the same on the start model's answers (one fixed set for
every run of a seed); pairwise accuracy and position consistency; the repair
rate of one reflection; test-time self-reflection accuracy at rounds 0 and 3 and their difference. Writes
logs/compare_spark/results.json.
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
METRICS = [
    ("val/accuracy", "solve val greedy"),
    ("test_ood/accuracy", "solve test_ood greedy"),
    ("val/accuracy_sampled", "solve val sampled (avg@4)"),
    ("test_ood/accuracy_sampled", "solve test_ood sampled"),
    ("val/judge_balanced_accuracy", "judge pointwise balanced acc"),
    ("val/judge_ece", "judge pointwise ECE"),
    ("val/judge_yes_rate", "judge says Y (fraction)"),
    ("val/judge_answers_correct", "judged answers correct (fraction)"),
    ("val/judge_ref_balanced_accuracy", "judge of start's answers: bal. acc"),
    ("val/judge_ref_ece", "judge of start's answers: ECE"),
    ("val/pair_accuracy", "judge pairwise accuracy"),
    ("val/pair_consistency", "judge pairwise consistency"),
    ("val/pair_ref_accuracy", "pairwise acc. on start's answers"),
    ("val/repair_rate", "reflection repair rate"),
    ("val/tts_round_0", "TTS round 0 (greedy)"),
    ("val/tts_round_3", "TTS round 3"),
    ("val/tts_gain", "TTS gain (round 3 - 0)"),
]
RUNS = ("start", "grpo", "spark")


def run(seed: int, overrides: list[str], out: str) -> dict[str, dict]:
    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=spark", f"seed={seed}", "logger=csv", "~callbacks.progress_bar", "save_model=false",
            f"paths.log_dir={out}", f"paths.output_dir={out}/spark-seed{seed}", *overrides])
    with open_dict(cfg):
        cfg.name = "spark"
        cfg.trainer.enable_progress_bar = False
    rows = train(cfg)["rows"]
    last = {name: [r for r in rows if r["run"].startswith(f"{name} epoch")][-1] for name in ("spark", "grpo")}
    return {"start": next(r for r in rows if r["run"] == "spark (start)"), **last}


def mean_and_error(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def print_table(results: dict[int, dict], seeds: list[int]) -> None:
    header = ["metric", *(f"{name} {'/'.join(f's{s}' for s in seeds)}" for name in RUNS),
              *(f"{name} mean" for name in RUNS)]
    lines = [["steps", *("/".join(str(results[s][n].get("step", "")) for s in seeds) for n in RUNS), "", "", ""]]
    for key, label in METRICS:
        cells = [label]
        cells += ["/".join(f"{results[s][n][key]:.3f}" if key in results[s][n] else "-" for s in seeds) for n in RUNS]
        cells += [mean_and_error([results[s][n][key] for s in seeds if key in results[s][n]]) for n in RUNS]
        lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_spark"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = {seed: run(seed, args.overrides, args.out) for seed in args.seeds}
    print_table(results, args.seeds)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump({"seeds": args.seeds, "overrides": args.overrides,
                   "results": {str(s): r for s, r in results.items()}}, handle, indent=1)


if __name__ == "__main__":
    main()
