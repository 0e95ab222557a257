"""SPARK's warm-up task: the arithmetic solve problems plus a few examples of each judge and reflection format.

SPARK's base model must already emit well-formed verdicts and revisions (the paper starts from an instruction-tuned
model); the tiny model learns the formats here. The format examples are built from training problems with
synthetic wrong answers near the truth (off by 1, 2, 9, 10 or 11), with the wordings of
`posttrain.rewards.recycling.TEMPLATES`, so they teach the same prompts the recycled data uses:

    pointwise  J1:12+35=47?          -> Y          (half with a wrong answer -> N)
    pairwise   J2:12+35=(A)46(B)47   -> B          (correct slot at random)
    reflect    R:12+35=46 fix        -> 47         (half in the CoT wording, R:12+35=[46] fix)

With `judge_labels: correct` (default) the verdicts are right, so the start model is a weak judge of near-miss
errors; `random` gives random verdicts (a start model that knows the format but has no judging skill).
The solve problems are `ArithmeticTask(**arithmetic)`'s train split (so a main stage with the same task settings
holds out the same val problems); its held-out splits are the arithmetic task's.
"""
from __future__ import annotations

import random

from datamodules.tasks.arithmetic import ArithmeticTask
from posttrain.rewards import recycling
from posttrain.utils.config import check

LABELS = ("correct", "random")


class SparkFormatsTask:
    """Args:
        format_size: examples of each of the three formats (drawn from the first solve problems, cycling).
        judge_labels: "correct" or "random" verdicts in the pointwise and pairwise examples.
        seed: seeds the arithmetic task and the format examples.
        **arithmetic: ArithmeticTask's arguments (operations, digits, train_size, ...).
    """

    def __init__(self, format_size: int = 200, judge_labels: str = "correct", seed: int = 0, **arithmetic):
        check(format_size >= 0, "stages.warmup.data.task.format_size", f"must be >= 0, got {format_size}")
        check(judge_labels in LABELS, "stages.warmup.data.task.judge_labels",
              f"must be one of {list(LABELS)}, got {judge_labels!r}")
        self.arithmetic = ArithmeticTask(seed=seed, **arithmetic)
        self.eval_splits = self.arithmetic.eval_splits
        solve = self.arithmetic.examples("train")
        rng = random.Random(seed + 7919)
        formats = []
        for i in range(format_size * 3 if solve else 0):
            example = solve[(i // 3) % len(solve)]
            question, truth = example["prompt"], example["answer"]
            wrong = recycling.synthetic_wrong_answer(rng, truth)
            kind = recycling.KINDS[i % 3]
            if kind == recycling.POINTWISE:
                correct = rng.random() < 0.5
                made = recycling.pointwise_example(rng, question, truth if correct else wrong, correct)
            elif kind == recycling.PAIRWISE:
                made = recycling.pairwise_example(rng, question, truth, wrong)
            else:
                made = recycling.reflect_example(rng, question, wrong, truth, wrong if rng.random() < 0.5 else None)
            if judge_labels == "random" and kind in recycling.VERDICTS:
                made["answer"] = made["response"] = rng.choice(recycling.VERDICTS[kind])
            formats.append(made)
        self._train = [*solve, *formats]

    def examples(self, split: str) -> list[dict]:
        return self._train if split == "train" else self.arithmetic.examples(split)

    def is_correct(self, example: dict, completion: str) -> bool:
        return completion.strip() == example["answer"]
