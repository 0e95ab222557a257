"""Pairwise critic prompts and test-time selection (LLaVA-Critic-R1, Wang et al., arXiv 2509.00676).

A critic item shows an image, a question and two responses; the model reasons inside <think></think> and names the
better one inside \\boxed{} ("1", "2", or "tie" where the data has ties). The same prompt serves training, held-out
critic accuracy and self-critique, where the policy's own sampled answers are compared by a knockout tournament.

Two prompt styles: "paper" (a judging instruction and the think/boxed format sentence, in our own words: the exact
strings are in the released dataset and can be passed as `judge_template` / `format_suffix`) and "short" (the same
fields in a few characters, for the character-level tiny VLM whose cost grows with every prompt character).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from posttrain.rewards.parsing import normalize_answer, parse_boxed
from posttrain.utils.config import check_choice

TIE = "tie"
STYLES = {
    "paper": {
        "judge": "You are shown an image and a question about it, followed by two responses to the question. Judge "
                 "which response answers the question better, considering correctness and helpfulness. Answer 1 "
                 "if Response 1 is better, 2 if Response 2 is better.\n"
                 "Question: {question}\n[Response 1]\n{response_1}\n[Response 2]\n{response_2}\n",
        "suffix": " First reason step by step as an internal monologue enclosed in <think> </think> tags, then give "
                  "the final answer inside \\boxed{}.",
    },
    "short": {
        "judge": "Better? {question}\n1:{response_1}\n2:{response_2}\n",
        "suffix": " <think></think>\\boxed{}",
    },
}


@dataclass(frozen=True)
class CriticPrompt:
    """The judging and question prompts of one style; `judge_template` needs {question}, {response_1},
    {response_2}; the format suffix follows both."""

    judge_template: str
    format_suffix: str

    @classmethod
    def of(cls, style: str, judge_template: str | None = None, format_suffix: str | None = None,
           key: str = "data.task.style") -> CriticPrompt:
        check_choice(style, tuple(STYLES), key)
        return cls(judge_template or STYLES[style]["judge"], STYLES[style]["suffix"] if format_suffix is None
                   else format_suffix)

    def judge(self, question: str, response_1: str, response_2: str) -> str:
        return self.judge_template.format(question=question, response_1=response_1,
                                          response_2=response_2) + self.format_suffix

    def question(self, question: str) -> str:
        return question + self.format_suffix


def target(reasoning: str, answer: str) -> str:
    """A response in the trained format: `<think>reasoning</think>\\boxed{answer}`."""
    return f"<think>{reasoning}</think>\\boxed{{{answer}}}"


def judged_choice(completion: str) -> str | None:
    """The critic's verdict: "1", "2" or "tie" from the last \\boxed{} ("Response 2" counts as 2), else None."""
    boxed = parse_boxed(completion)
    if boxed is None:
        return None
    text = normalize_answer(boxed).replace("response", "").replace(" ", "")
    return text if text in ("1", "2", TIE) else None


def knockout(candidates: Sequence[Sequence[str]], judge: Callable[[list[tuple[int, str, str]]], list[str | None]]
             ) -> tuple[list[int], int, list[list[int]]]:
    """Picks one candidate per question by a single-elimination tournament of pairwise judgements.

    Each round pairs the survivors in order (0 v 1, 2 v 3, ...; an odd last one passes unjudged) and asks
    `judge([(question index, response_1, response_2), ...])` for every pair of every question at once, which returns
    "1", "2", "tie" or None per pair; the second response goes through only on "2" (a tie or an unreadable verdict
    keeps the first, so position bias shows as a preference for earlier samples). N candidates cost N − 1 judgements.

    Because pairs are formed in order, after round r the first survivor of a question is the winner of its first
    2^r candidates' own knockout: one tournament of 16 also decides those of 1, 2, 4 and 8 (the same judgements).

    Returns (the winner's index for each question, judge calls made, `leaders`: leaders[r][q] = the winner among
    question q's first 2^r candidates, r = 0, 1, ... until every question is decided).
    """
    alive = [list(range(len(c))) for c in candidates]
    calls, leaders = 0, [[0 for _ in candidates]]
    while any(len(a) > 1 for a in alive):
        pairs = [(q, a[i], a[i + 1]) for q, a in enumerate(alive) for i in range(0, len(a) - 1, 2)]
        verdicts = judge([(q, candidates[q][i], candidates[q][j]) for q, i, j in pairs])
        calls += len(pairs)
        winners: dict[int, list[int]] = {q: [] for q in range(len(alive))}
        for (q, i, j), verdict in zip(pairs, verdicts):
            winners[q].append(j if verdict == "2" else i)
        alive = [winners[q] + ([a[-1]] if len(a) % 2 else []) if len(a) > 1 else a for q, a in enumerate(alive)]
        leaders.append([a[0] for a in alive])
    return [a[0] for a in alive], calls, leaders


def majority_vote(answers: Sequence[str | None]) -> int:
    """Index of a sample carrying the most frequent parsed answer (the earliest such sample; None answers never
    win unless nothing parsed, then sample 0)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)
