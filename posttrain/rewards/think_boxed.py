"""The verifiable reward of LLaVA-Critic-R1 (Wang et al., arXiv 2509.00676): answer match plus think-then-box format.

    r(o) = α · r_pref(o) + (1 − α) · r_format(o),   α = 0.9 (the released reward's format weight 0.1)
    r_format(o) = 1 iff o, with the whitespace around '<', '>' and '/' removed, fully matches
                  `<think>.*</think>.*\\boxed{.*}` (DOTALL)
    r_pref(o)   = 1 iff the content of o's last \\boxed{} equals the reference answer (normalised)

On critic items the reference is the preferred response's label ("1", "2", or "tie"); on questions it is the
answer, so the same object scores the policy GRPO control and the QA evaluation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from posttrain.rewards.parsing import answers_match, normalize_answer, parse_boxed
from posttrain.rewards.verifiers import Verdict
from posttrain.utils.config import check

_AROUND_TAG_CHARS = re.compile(r"\s*([</>])\s*")
_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}", re.DOTALL)


def follows_format(completion: str) -> bool:
    """r_format: the whole completion is `<think>…</think>…\\boxed{…}` once the spaces around < / > are gone
    (so `< think >` and `</ think>` count, as in the released code)."""
    return _FORMAT.fullmatch(_AROUND_TAG_CHARS.sub(r"\1", completion)) is not None


def grade(predicted: str | None, reference: str) -> bool:
    """The boxed answer against the reference: case, spaces and a final full stop ignored; numbers by value."""
    if predicted is None:
        return False
    return answers_match(normalize_answer(predicted), normalize_answer(reference))


@dataclass(frozen=True)
class GradedVerdict(Verdict):
    """A Verdict whose reward is the weighted sum, not 0/1; `correct` stays the answer match alone."""

    formatted: bool = False
    value: float = 0.0

    @property
    def reward(self) -> float:
        return self.value


class ThinkBoxedReward:
    """`reward(example, completion) -> GradedVerdict` with reward α·[answer right] + (1 − α)·[format right].

    Args:
        alpha: weight of the answer match, in [0, 1]; 1.0 = answer only, the paper's 0.9 by default.
    """

    def __init__(self, alpha: float = 0.9):
        check(0.0 <= alpha <= 1.0, "reward.alpha", f"must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def __call__(self, example: dict, completion: str) -> GradedVerdict:
        predicted = parse_boxed(completion)  # the last \boxed{}, nested braces kept; None if absent or unclosed
        correct, formatted = grade(predicted, str(example["answer"])), follows_format(completion)
        return GradedVerdict(correct=correct, parsed=predicted is not None, formatted=formatted,
                             value=self.alpha * correct + (1 - self.alpha) * formatted)
