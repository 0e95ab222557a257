"""Evidence for SPARK: SPARK against policy-only GRPO and the start model, from the same warm-up, on the same solve
prompts with the same number of solve updates, for several seeds; one table.

    OMP_NUM_THREADS=1 python scripts/compare_spark.py [--seeds 0 1] [key=value ...]

Each seed is one `python train.py experiment=spark seed=<s>` run: the cached warm-up (the start model), SPARK (main
stage) and GRPO (its control stage: the same module with method.recycle=false). Extra key=value arguments are Hydra
overrides applied to the run (e.g. trainer.max_epochs=5). Prints, per metric, the start model's, GRPO's and SPARK's
value after the last epoch per seed and the mean ± standard error over seeds (sd / sqrt(n)):
solve greedy and sampled accuracy on val and test_ood; as a judge of its own held-out sampled answers, pointwise
balanced accuracy, ECE and the fraction judged correct, and the same on the start model's answers (one fixed set for
every run of a seed); pairwise accuracy and order agreement (the same answer wins in both orders); the
repair rate of one reflection; test-time self-reflection accuracy at round 0 and at the last round of the run and
their difference. With --compute-matched, each seed also runs policy-only GRPO for twice the epochs
(`grpo x2`: as many optimizer steps as SPARK, all on solve prompts, from the same cached warm-up). Writes
logs/compare_spark/results.json.
"""
from __future__ import annotations

import argparse
import math
import os

from compare_common import ROOT, mean_and_error, print_rows, run_experiment, write_results

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
    ("val/pair_order_agreement", "pairwise order agreement"),
    ("val/pair_ref_accuracy", "pairwise acc. on start's answers"),
    ("val/repair_rate", "reflection repair rate"),
    ("val/tts_round_0", "TTS round 0 (greedy)"),
    ("val/tts_round_last", "TTS last round"),
    ("val/tts_gain", "TTS gain (last round - 0)"),
]


def run(seed: int, overrides: list[str], out: str, compute_matched: bool) -> dict[str, dict]:
    result = run_experiment("spark", "spark", seed, out, overrides)
    rows = result["rows"]
    last = {name: [r for r in rows if r["run"].startswith(f"{name} epoch")][-1] for name in ("spark", "grpo")}
    runs = {"start": next(r for r in rows if r["run"] == "spark (start)"), "grpo": last["grpo"]}
    if compute_matched:
        epochs = 2 * result["cfg"].trainer.max_epochs  # SPARK makes one reward-period update per solve update
        matched = run_experiment("spark", "grpo_x2", seed, out, [*overrides, "method.recycle=false",
                                                                 "stages.control=null",
                                                                 f"trainer.max_epochs={epochs}"])["rows"]
        runs["grpo x2"] = matched[-1]
    runs["spark"] = last["spark"]
    return {name: with_last_round(row) for name, row in runs.items()}


def with_last_round(row: dict) -> dict:
    """The row with `val/tts_round_last`: the highest `val/tts_round_<k>` it has (method.judge_eval.rounds varies)."""
    rounds = [int(k.rsplit("_", 1)[1]) for k in row if k.startswith("val/tts_round_") and k[-1].isdigit()]
    return {**row, "val/tts_round_last": row[f"val/tts_round_{max(rounds)}"]} if rounds else dict(row)


def print_table(results: dict[int, dict], seeds: list[int]) -> None:
    runs = list(results[seeds[0]])
    header = ["metric", *(f"{name} {'/'.join(f's{s}' for s in seeds)}" for name in runs),
              *(f"{name} mean" for name in runs)]
    lines = [["steps", *("/".join(str(results[s][n].get("step", "")) for s in seeds) for n in runs),
              *([""] * len(runs))]]
    for key, label in METRICS:
        cells = [label]
        # NaN (e.g. balanced accuracy with one class present) is shown as "-" and left out of the mean
        present = {n: [s for s in seeds if key in results[s][n] and not math.isnan(results[s][n][key])] for n in runs}
        cells += ["/".join(f"{results[s][n][key]:.3f}" if s in present[n] else "-" for s in seeds) for n in runs]
        cells += [mean_and_error([results[s][n][key] for s in present[n]]) for n in runs]
        lines.append(cells)
    print_rows(header, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=os.path.join(ROOT, "logs", "compare_spark"))
    parser.add_argument("--compute-matched", action="store_true",
                        help="also run policy-only GRPO with SPARK's number of optimizer steps")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = {seed: run(seed, args.overrides, args.out, args.compute_matched) for seed in args.seeds}
    print_table(results, args.seeds)
    write_results(args.out, {"spark": results}, seeds=args.seeds, overrides=args.overrides)


if __name__ == "__main__":
    main()
