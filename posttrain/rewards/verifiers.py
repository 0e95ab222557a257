"""Binary verifiers: rewards `reward(example, completion) -> Verdict(correct, parsed)` against `example["answer"]`.

A verifier never raises on model output. An unparseable completion is wrong (`parsed=False`), and rollouts count
those in the `unparsed` metric. Verifiers are plain objects configured under their own Hydra group (`conf/reward/`,
e.g. `reward=gsm8k`) and given to the method (`method.reward`, `method.evaluator.reward`), never to the data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from posttrain.rewards.parsing import answers_match, normalize_answer, normalize_number, parse_boxed, parse_hash_answer

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    parsed: bool  # the completion contained an answer in the expected format

    @property
    def reward(self) -> float:
        return 1.0 if self.correct else 0.0


class ArithmeticVerifier:
    """The built-in arithmetic task's check: the stripped completion equals the answer string exactly (as the
    task's own `is_correct` does, so warm-up and online accuracies agree). Parsed means it is an integer."""

    answer_is_completion = True  # the stripped completion is the extracted answer (SPARK's recycling relies on it)

    def __call__(self, example: dict, completion: str) -> Verdict:
        text = completion.strip()
        return Verdict(correct=text == example["answer"].strip(), parsed=bool(_INTEGER.fullmatch(text)))


class ExactMatchVerifier:
    """The completion is the answer: reward 1 when it equals `example["answer"]`.

    Both sides are stripped; with `normalize` (short answers: a word, a digit, yes/no) also lower-cased, inner
    whitespace collapsed and a final full stop dropped (`normalize_answer`). Parsed means the compared completion
    is not empty, so an empty reference never rewards an empty completion.
    """

    answer_is_completion = True  # the (normalised) completion is the extracted answer

    def __init__(self, normalize: bool = False):
        self.normalize = normalize

    def _clean(self, text: str) -> str:
        return normalize_answer(text) if self.normalize else text.strip()

    def __call__(self, example: dict, completion: str) -> Verdict:
        predicted = self._clean(completion)
        return Verdict(correct=bool(predicted) and predicted == self._clean(example["answer"]), parsed=bool(predicted))


class GSM8KVerifier:
    """GSM8K style: the number after the last `#### ` in the completion equals the one in the reference answer
    (the reference may be a full GSM8K solution ending in `#### <answer>` or a bare number)."""

    def __call__(self, example: dict, completion: str) -> Verdict:
        answer = example["answer"]
        predicted = parse_hash_answer(completion)
        if predicted is None or normalize_number(predicted) is None:
            return Verdict(correct=False, parsed=False)
        reference = parse_hash_answer(answer) or answer
        return Verdict(correct=answers_match(predicted, reference), parsed=True)


class BoxedVerifier:
    """MATH style: the last `\\boxed{...}` of the completion against the reference (its own `\\boxed{}`, a
    `####` answer or the bare string); numbers compare by value, anything else by whitespace-free string."""

    def __call__(self, example: dict, completion: str) -> Verdict:
        answer = example["answer"]
        predicted = parse_boxed(completion)
        if predicted is None:
            return Verdict(correct=False, parsed=False)
        reference = parse_boxed(answer) or parse_hash_answer(answer) or answer.strip()
        return Verdict(correct=answers_match(predicted, reference), parsed=True)
