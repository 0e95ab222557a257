"""Built-in graded preference pairs over arithmetic problems: a verifiable stand-in for human preference.

Problems (and their splits: train and val share the digit range, test_ood has more digits) are those of
`ArithmeticTask` with the same settings. Each problem gets `pairs_per_problem` pairs of answers, drawn from the
correct answer and wrong answers of several kinds:

    off_by_one   truth ± 1             off_by_ten  truth ± 10
    nearby       truth + d, 2 ≤ |d| ≤ max(3, |truth| / 5)
    digit_swap   two adjacent digits of the truth swapped (when that changes the number)
    malformed    not a number ("12a", "?", "1 2", "")

The gold quality of an answer is `score(y) = −|value(y) − truth|`, and −inf for a malformed answer. A pair's
`chosen` has the higher gold score; a `correct_fraction` of pairs are correct vs wrong, the rest wrong vs wrong with
different gold scores (graded pairs: the closer wrong answer is chosen). `label_noise` swaps chosen and rejected in
that fraction of *training* pairs (mimicking annotator noise); held-out labels are always gold.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from datamodules.tasks.arithmetic import ArithmeticTask
from posttrain.utils.config import ConfigError, check

WRONG_KINDS = ("off_by_one", "off_by_ten", "nearby", "digit_swap", "malformed")
MALFORMED_SCORE = -math.inf
# a single kind whose wrong answers all lie at one distance from the truth: two of them always tie
TIED_KINDS = ({"off_by_one"}, {"off_by_ten"}, {"malformed"})
MAX_GRADED_TRIES = 1000


def gold_score(response: str, truth: int) -> float:
    """−|value(y) − truth|; −inf when y is not an integer."""
    try:
        value = int(response.strip())
    except ValueError:
        return MALFORMED_SCORE
    return float(-abs(value - truth))


def wrong_answer(kind: str, truth: int, rng: random.Random) -> str | None:
    """One wrong answer of `kind`, or None when the kind has none for this truth (a swap of equal digits)."""
    if kind == "off_by_one":
        return str(truth + rng.choice((-1, 1)))
    if kind == "off_by_ten":
        return str(truth + rng.choice((-10, 10)))
    if kind == "nearby":
        radius = max(3, abs(truth) // 5)
        return str(truth + rng.choice((-1, 1)) * rng.randint(2, radius))
    if kind == "digit_swap":
        digits = list(str(abs(truth)))
        swappable = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1] and (i > 0 or digits[1] != "0")]
        if not swappable:
            return None
        i = rng.choice(swappable)
        digits[i], digits[i + 1] = digits[i + 1], digits[i]
        return ("-" if truth < 0 else "") + "".join(digits)
    if kind == "malformed":
        text = str(truth)
        return rng.choice((text + rng.choice("a?="), "?", text[:1] + " " + text[1:] if len(text) > 1 else "x" + text,
                           ""))
    raise ValueError(f"unknown wrong-answer kind {kind!r}")


class ArithmeticPairTask:
    """Preference pairs {"prompt", "chosen", "rejected", "chosen_score", "rejected_score", "noisy", "answer"} per
    split (`answer`: the problem's correct answer, so a policy trained on the pairs can be scored by generation).

    Args:
        operations, digits, ood_digits, train_size, val_size, test_ood_size, seed: the problems, as for
            `ArithmeticTask` (sizes count problems).
        pairs_per_problem: pairs drawn per problem.
        correct_fraction: fraction of pairs whose chosen answer is the correct one; the rest are wrong vs wrong.
        wrong_kinds: kind -> relative weight of each kind of wrong answer (`WRONG_KINDS`).
        label_noise: probability that a training pair's labels are swapped.
    """

    eval_splits: tuple[str, ...] = ("val", "test_ood")

    def __init__(
        self,
        operations: Sequence[str] = ("+",),
        digits: Sequence[int] = (1, 2),
        ood_digits: Sequence[int] = (3, 3),
        train_size: int = 2000,
        val_size: int = 500,
        test_ood_size: int = 500,
        pairs_per_problem: int = 1,
        correct_fraction: float = 0.5,
        wrong_kinds: Mapping[str, float] | None = None,
        label_noise: float = 0.1,
        seed: int = 0,
    ):
        weights = dict(wrong_kinds if wrong_kinds is not None else {k: 1.0 for k in WRONG_KINDS})
        for kind, weight in weights.items():
            check(kind in WRONG_KINDS, "data.task.wrong_kinds",
                  f"unknown kind {kind!r}; choose from {list(WRONG_KINDS)}")
            check(weight >= 0, f"data.task.wrong_kinds.{kind}", f"must be >= 0, got {weight}")
        check(sum(weights.values()) > 0, "data.task.wrong_kinds", "needs at least one kind with a positive weight")
        check(0 <= correct_fraction <= 1, "data.task.correct_fraction", f"must be in [0, 1], got {correct_fraction}")
        check(0 <= label_noise < 0.5, "data.task.label_noise", f"must be in [0, 0.5), got {label_noise}")
        positive = {k for k in weights if weights[k] > 0}
        check(correct_fraction == 1 or positive not in TIED_KINDS,
              "data.task.wrong_kinds", f"wrong vs wrong pairs need two wrong answers of different gold scores; "
              f"{sorted(positive)} alone always tie (add another kind, e.g. nearby, or set correct_fraction=1)")
        check(pairs_per_problem >= 1, "data.task.pairs_per_problem", f"must be >= 1, got {pairs_per_problem}")
        self.problems = ArithmeticTask(operations=operations, digits=digits, ood_digits=ood_digits,
                                       train_size=train_size, val_size=val_size, test_ood_size=test_ood_size,
                                       seed=seed)
        self.kinds = [k for k in weights if weights[k] > 0]
        self.weights = [weights[k] for k in self.kinds]
        self.correct_fraction, self.label_noise = correct_fraction, label_noise
        self.pairs_per_problem = pairs_per_problem
        # one generator per split, so a split's pairs do not depend on the sizes of the others
        self._splits = {split: self._pairs(split, random.Random(f"{seed}/{split}"))
                        for split in ("train", *self.eval_splits)}

    def examples(self, split: str) -> list[dict]:
        check(split in self._splits, "split", f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return self._splits[split]

    def _pairs(self, split: str, rng: random.Random) -> list[dict]:
        noise = self.label_noise if split == "train" else 0.0
        out = []
        for problem in self.problems.examples(split):
            truth = int(problem["answer"])
            for _ in range(self.pairs_per_problem):
                better, worse = self._graded_pair(truth, rng)
                scores = (gold_score(better, truth), gold_score(worse, truth))
                noisy = rng.random() < noise
                if noisy:
                    better, worse, scores = worse, better, scores[::-1]
                out.append({"prompt": problem["prompt"], "chosen": better, "rejected": worse, "chosen_score": scores[0],
                            "rejected_score": scores[1], "noisy": noisy, "answer": problem["answer"]})
        return out

    def _graded_pair(self, truth: int, rng: random.Random) -> tuple[str, str]:
        """(better, worse) by gold score, never tied."""
        if rng.random() < self.correct_fraction:
            return str(truth), self._wrong(truth, rng)
        for _ in range(MAX_GRADED_TRIES):
            a, b = self._wrong(truth, rng), self._wrong(truth, rng)
            sa, sb = gold_score(a, truth), gold_score(b, truth)
            if sa != sb:
                return (a, b) if sa > sb else (b, a)
        # e.g. digit_swap alone on a 2-digit truth has one wrong answer; retrying forever would hang data setup
        raise ConfigError(f"data.task.wrong_kinds: {self.kinds} gave no two wrong answers of different gold scores "
                          f"for truth {truth} in {MAX_GRADED_TRIES} tries; add a kind such as nearby, or set "
                          f"data.task.correct_fraction=1")

    def _wrong(self, truth: int, rng: random.Random) -> str:
        for _ in range(100):
            answer = wrong_answer(rng.choices(self.kinds, self.weights)[0], truth, rng)
            if answer is not None and answer.strip() != str(truth):
                return answer
        return wrong_answer("off_by_one", truth, rng)  # only kinds without a wrong answer for this truth were drawn
