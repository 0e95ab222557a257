"""Exact-answer verifier for tasks whose whole completion is a short answer (a word, a digit, yes/no)."""
from __future__ import annotations

from posttrain.rewards.verifiers import Verdict


def normalize_answer(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces and trimmed, a final full stop dropped: " Yes." -> "yes"."""
    return " ".join(text.lower().split()).removesuffix(".").strip()


class ExactAnswerVerifier:
    """Reward 1 when the normalised completion equals the normalised reference `example["answer"]`.

    Parsed means the completion is not empty after normalisation (there is no answer format to miss).
    """

    answer_is_completion = True  # the normalised completion is the extracted answer

    def __call__(self, example: dict, completion: str) -> Verdict:
        predicted = normalize_answer(completion)
        return Verdict(correct=bool(predicted) and predicted == normalize_answer(example["answer"]),
                       parsed=bool(predicted))
