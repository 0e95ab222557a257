"""Built-in verifiable task: n-digit addition, subtraction and multiplication, seeded.

Splits: `train` and `val` share the in-distribution digit range; `test_ood` uses more digits.
Every held-out problem is distinct from every training problem. `dev_size` > 0 adds a `dev` split (drawn last, so
the other splits do not change with it, and distinct from `train` and `val`): a validation split a stage can stop
on (e.g. a warm-up trained to a target accuracy) without ever looking at `val`.
With `retain_operations`, a `retain` split holds problems of an earlier task A (e.g. addition, while this task B is
subtraction): it is exactly the `val` split of
`ArithmeticTask(operations=retain_operations, digits=retain_digits, seed=seed)`, so a model warmed up on that task
is scored on A problems it never trained on, and the drop of `retain/accuracy` measures forgetting. When A mixes
operations (e.g. mostly addition and some of B's subtraction), `retain_keep` keeps only A's val problems of those
operations (e.g. `[+]`: the capability B does not train), still problems A never trained on.
`carries` restricts addition to problems with no carry ("none") or at least one ("only"), e.g. A = addition without
carries, B = addition with carries: B then differs from A only at the carry digits.
`response_format="worked"` (addition only) answers with the column-by-column working (`worked_addition`): tens of
tokens, most of them copied from the prompt or fixed by the template and a few computed, and the answer to match
is the whole worked response.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from posttrain.utils.config import check

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
CARRIES = ("any", "none", "only")
FORMATS = ("answer", "worked")


def worked_addition(a: int, b: int) -> str:
    """Column addition of non-negative a + b written out, least significant column first, e.g.

        worked_addition(47, 38) == "7+8=15 carry 1, 4+3+1=8 carry 0, so 47+38=85"

    Every column reads "x+y[+c]=s carry k" (the incoming carry c only when it is 1; a shorter operand's missing
    digits are 0), then "so a+b=sum". The operands' digits, the template and the restated problem are predictable
    from the prompt; only the column sums, the carries and the final sum are computed.
    """
    check(a >= 0 and b >= 0, "a, b", f"must be non-negative, got {a}, {b}")
    width = max(len(str(a)), len(str(b)))
    xs, ys = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]  # least significant digit first
    carry, columns = 0, []
    for x, y in zip(xs, ys):
        total = int(x) + int(y) + carry
        columns.append(f"{x}+{y}{'+1' if carry else ''}={total} carry {total // 10}")
        carry = total // 10
    return f"{', '.join(columns)}, so {a}+{b}={a + b}"


def has_carry(a: int, b: int) -> bool:
    """Whether column addition of a + b carries in any column (one carry is enough, so the incoming one is moot)."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


class ArithmeticTask:
    eval_splits: tuple[str, ...] = ("val", "test_ood")

    def __init__(
        self,
        operations: Sequence[str] = ("+",),
        digits: Sequence[int] = (1, 3),
        ood_digits: Sequence[int] = (4, 4),
        train_size: int = 10000,
        val_size: int = 1000,
        test_ood_size: int = 1000,
        seed: int = 0,
        retain_operations: Sequence[str] = (),
        retain_digits: Sequence[int] | None = None,
        retain_size: int = 1000,
        carries: str = "any",
        retain_carries: str = "any",
        dev_size: int = 0,
        retain_keep: Sequence[str] = (),
        response_format: str = "answer",
    ):
        for op in operations:
            check(op in _OPS, "data.task.operations", f"unknown operation {op!r}; choose from {sorted(_OPS)}")
        check(1 <= digits[0] <= digits[1], "data.task.digits",
              f"must be [min, max] with 1 <= min <= max, got {list(digits)}")
        check(1 <= ood_digits[0] <= ood_digits[1], "data.task.ood_digits",
              f"must be [min, max], got {list(ood_digits)}")
        for key, size in (("train_size", train_size), ("val_size", val_size), ("test_ood_size", test_ood_size),
                          ("retain_size", retain_size), ("dev_size", dev_size)):
            check(size >= 0, f"data.task.{key}", f"must be >= 0, got {size}")
        for key, value in (("carries", carries), ("retain_carries", retain_carries)):
            check(value in CARRIES, f"data.task.{key}", f"must be one of {list(CARRIES)}, got {value!r}")
        check(carries == "any" or set(operations) == {"+"}, "data.task.carries",
              f"only applies to addition, got operations {list(operations)}")
        check(response_format in FORMATS, "data.task.response_format",
              f"must be one of {list(FORMATS)}, got {response_format!r}")
        check(response_format == "answer" or set(operations) == {"+"}, "data.task.response_format",
              f"'worked' only applies to addition, got operations {list(operations)}")
        self.response_format = response_format
        self.operations, self.digits, self.ood_digits = tuple(operations), tuple(digits), tuple(ood_digits)
        self.carries = carries
        rng = random.Random(seed)
        held_out = self._draw(rng, self.digits, val_size, exclude=set())
        self._splits = {
            "val": held_out,
            "train": self._draw(rng, self.digits, train_size, exclude={e["prompt"] for e in held_out}),
            "test_ood": self._draw(rng, self.ood_digits, test_ood_size, exclude=set()),
        }
        if dev_size:
            seen = {e["prompt"] for split in ("val", "train") for e in self._splits[split]}
            self._splits["dev"] = self._draw(rng, self.digits, dev_size, exclude=seen)
        if retain_operations:
            self._splits["retain"] = retain_split(retain_operations, retain_digits or digits, retain_size, seed,
                                                  retain_carries, retain_keep)
            self.eval_splits = (*self.eval_splits, "retain")

    def examples(self, split: str) -> list[dict]:
        check(split in self._splits, "split", f"unknown split {split!r}; this task has {sorted(self._splits)}")
        return self._splits[split]

    @staticmethod
    def is_correct(example: dict, completion: str) -> bool:
        return completion.strip() == example["answer"]

    def _draw(self, rng: random.Random, digits, n: int, exclude: set) -> list[dict]:
        capacity = self._capacity(digits)
        check(n <= capacity - len(exclude), "data.task", f"cannot draw {n} distinct problems from {capacity}")
        seen, out = set(exclude), []
        while len(out) < n:
            op = rng.choice(self.operations)
            a, b = self._operand(rng, digits), self._operand(rng, digits)
            prompt = f"{a}{op}{b}="
            if prompt in seen or (self.carries != "any" and has_carry(a, b) != (self.carries == "only")):
                continue
            seen.add(prompt)
            answer = worked_addition(a, b) if self.response_format == "worked" else str(_OPS[op](a, b))
            out.append({"prompt": prompt, "response": answer, "answer": answer})
        return out

    @staticmethod
    def _operand(rng: random.Random, digits) -> int:
        n = rng.randint(digits[0], digits[1])
        return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)

    def _capacity(self, digits) -> int:
        numbers = 10 ** digits[1]  # every operand in range, an upper bound good enough to reject impossible sizes
        return len(self.operations) * numbers * numbers


def retain_split(operations: Sequence[str], digits: Sequence[int], size: int, seed: int,
                 carries: str = "any", keep: Sequence[str] = ()) -> list[dict]:
    """The `val` split of task A = ArithmeticTask(operations, digits, seed, carries): A problems that A's train split
    excludes; with `keep`, only its problems of those operations (so fewer than `size`).

    `val` is drawn first from the seeded generator, so its first `size` problems do not depend on A's other sizes.
    """
    for op in operations:
        check(op in _OPS, "data.task.retain_operations", f"unknown operation {op!r}; choose from {sorted(_OPS)}")
    check(1 <= digits[0] <= digits[1], "data.task.retain_digits", f"must be [min, max], got {list(digits)}")
    for op in keep:
        check(op in operations, "data.task.retain_keep", f"{op!r} is not one of retain_operations {list(operations)}")
    task_a = ArithmeticTask(operations=operations, digits=digits, train_size=0, val_size=size, test_ood_size=0,
                            seed=seed, carries=carries)
    examples = task_a.examples("val")
    return [e for e in examples if operation(e["prompt"]) in keep] if keep else examples


def operation(prompt: str) -> str:
    """The operation of a prompt "<a><op><b>=" (operands are non-negative, so the operator is the only sign)."""
    return next(ch for ch in prompt if ch in _OPS)
