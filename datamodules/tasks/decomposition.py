"""Built-in task with a known answer distribution: write n as a digit plus the rest, "n=" -> "d+m", m = n - d.

The digit d of each response is drawn from a known categorical π_n over 0..9 and m = n − d, so p_data(·|n) is
known exactly: its support is the ten strings "d+(n−d)" (n ≥ 10 keeps m ≥ 1) with probabilities π_n(d). Odd n use
`probs`, even n the same list reversed (π_n(d) = probs[9 − d]), so the distribution depends on the prompt. Every
example carries its prompt's whole distribution (`support`: [[response, probability], ...]), from which an
evaluator computes exact divergences between a model's answer distribution and p_data
(`posttrain.evaluators.SupportEvaluator`), and `answer`, the distribution's unique mode, the target of greedy
exact match.

Splits: `val` (the held-out split that early stopping and tuning read), `test` (the reported evaluation) and `train`
use disjoint sets of numbers; `train` holds `train_size` samples (prompt, response ~ p_data) over its
`train_prompts` numbers, so a training prompt comes back with different responses, as in data with several
demonstrations per prompt.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

from posttrain.utils.config import check

# π over d = 0..9 for odd n: mode 7, well above the next digit (a close second made greedy exact match flip between
# epochs), so the greedy answer "7+(n−7)" needs a borrow for most n.
DEFAULT_PROBS = (0.02, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.30, 0.12, 0.08)


def digit_probs(n: int, probs: Sequence[float]) -> list[float]:
    """π_n(d) for d = 0..9: `probs` for odd n, reversed for even n."""
    return list(probs) if n % 2 else list(reversed(probs))


def distribution(n: int, probs: Sequence[float]) -> list[list]:
    """p_data(·|"n="): [["d+m", π_n(d)], ...] over d = 0..9 with m = n − d (zero-probability digits left out)."""
    return [[f"{d}+{n - d}", p] for d, p in enumerate(digit_probs(n, probs)) if p > 0]


def parse(completion: str, n: int) -> int | None:
    """The digit d of a valid answer "d+m" (d one digit, m = n − d, no leading zeros), else None."""
    text = completion.strip()
    left, plus, right = text.partition("+")
    if not plus or len(left) != 1 or not left.isdigit() or not right.isdigit() or str(int(right)) != right:
        return None
    d = int(left)
    return d if d + int(right) == n else None


class DecompositionTask:
    eval_splits: tuple[str, ...] = ("val", "test")

    def __init__(self, numbers: Sequence[int] = (10, 999), train_prompts: int = 400, train_size: int = 2000,
                 val_size: int = 200, test_size: int = 300, probs: Sequence[float] = DEFAULT_PROBS, seed: int = 0):
        check(len(numbers) == 2 and 10 <= numbers[0] <= numbers[1], "data.task.numbers",
              f"must be [min, max] with 10 <= min <= max (m = n - d stays >= 1), got {list(numbers)}")
        check(len(probs) == 10 and all(p >= 0 for p in probs) and math.isclose(sum(probs), 1.0, abs_tol=1e-9),
              "data.task.probs", f"must be 10 non-negative probabilities (d = 0..9) summing to 1, got {list(probs)}")
        top = max(probs)
        check(sum(p == top for p in probs) == 1, "data.task.probs",
              f"needs a unique largest probability (the mode is the greedy target), got {list(probs)}")
        for key, size in (("train_prompts", train_prompts), ("train_size", train_size), ("val_size", val_size),
                          ("test_size", test_size)):
            check(size >= 0, f"data.task.{key}", f"must be >= 0, got {size}")
        available = numbers[1] - numbers[0] + 1
        check(train_prompts + val_size + test_size <= available, "data.task",
              f"train_prompts + val_size + test_size = {train_prompts + val_size + test_size} distinct numbers, "
              f"but data.task.numbers holds {available}")
        check(train_size == 0 or train_prompts > 0, "data.task.train_prompts", "must be > 0 when train_size > 0")
        self.probs = tuple(float(p) for p in probs)
        rng = random.Random(seed)
        pool = rng.sample(range(numbers[0], numbers[1] + 1), train_prompts + val_size + test_size)
        val, test, train = pool[:val_size], pool[val_size:val_size + test_size], pool[val_size + test_size:]
        self._splits = {
            "val": [self.example(n, rng) for n in val],
            "test": [self.example(n, rng) for n in test],
            "train": [self.example(n, rng) for n in (rng.choice(train) for _ in range(train_size))],
        }

    def example(self, n: int, rng: random.Random) -> dict:
        """One example of prompt n: a response sampled from p_data (on held-out rows the NLL reference, an unbiased
        estimate of the cross-entropy), the distribution's mode as `answer`, the whole distribution."""
        support = distribution(n, self.probs)
        mode = max(support, key=lambda item: item[1])[0]
        response = rng.choices([s for s, _ in support], weights=[p for _, p in support])[0]
        return {"prompt": f"{n}=", "response": response, "answer": mode, "support": support}

    def examples(self, split: str) -> list[dict]:
        check(split in self._splits, "split", f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return self._splits[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        """Greedy exact match: the completion is the distribution's mode."""
        return completion.strip() == example["answer"]

    @staticmethod
    def is_valid(example: dict, completion: str) -> bool:
        """The completion is in the support: "d+m" with m = n − d."""
        return parse(completion, int(example["prompt"][:-1])) is not None
