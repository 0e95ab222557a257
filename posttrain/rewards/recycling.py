"""SPARK's recycling step: the policy's own rollouts and their verifier results become new verifiable examples.

Pure data construction (no model, no loss), after the released code's `new_data_gen.py`. For each solve prompt q
with K rollouts, their rewards R_j and extracted answers â_j:

- pointwise judge: "is â correct?" -> "Y"/"N" (= R of that rollout).
  All-correct or all-wrong groups give one example; a mixed group gives one with probability 1 − p_pair, of a
  class drawn 50/50 (so a high-accuracy batch does not flood the judge with "Y").
- pairwise judge: "(A) â_1 (B) â_2, which is correct?" -> the letter of the correct one; mixed groups only, with
  probability p_pair; one random correct + one random wrong answer, the correct one in a random slot.
- reflection: a wrong answer -> the ground truth of q, for every group with a wrong rollout; "CoT" mode (the full
  wrong response) for the first half of the batch's prompts, answer-only mode (â) for the second half.

Extraction: an answer is extracted when the verifier parsed the completion (`parsed`); rollouts without one are
dropped from every kind (which is the released code's substitution of another answer of the same class when the
group has one, and its skip when it has none). Per batch at most `judge_cap` judge and `reflect_cap` reflection
examples are kept (a seeded random subset), as the paper keeps ≤ 32 + 32 of 64. Each example draws its wording from
a pool of templates of its kind (the paper's prompt diversity). Everything is driven by one `random.Random`, so the
result is a function of the inputs and the seed.

The recycled examples are scored by exact match of the verdict (judge kinds) or by the task's verifier against the
ground truth (reflection): `score_recycled`, `RecycledReward`.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from posttrain.rewards.verifiers import Verdict
from posttrain.utils.config import check

POINTWISE, PAIRWISE, REFLECT = "pointwise", "pairwise", "reflect"
KINDS = (POINTWISE, PAIRWISE, REFLECT)
YES, NO = "Y", "N"
FIRST, SECOND = "A", "B"

# {q} is the solve prompt ("12+35="), {a} / {b} answers, {r} a full response. The first template of each pool is
# the canonical one that evaluation uses.
TEMPLATES = {
    POINTWISE: ("J1:{q}{a}?", "J1:{q}{a} ok?", "J1:is {q}{a}?", "J1:check {q}{a}"),
    PAIRWISE: ("J2:{q}(A){a}(B){b}", "J2:{q} A:{a} B:{b}", "J2:pick {q}(A){a}(B){b}"),
    REFLECT: ("R:{q}{a} fix", "R:{q}{a}? redo", "R:fix {q}{a}"),
    "reflect_cot": ("R:{q}[{r}] fix", "R:{q}[{r}] redo", "R:fix {q}[{r}]"),
}
VERDICTS = {POINTWISE: (YES, NO), PAIRWISE: (FIRST, SECOND)}


def pointwise_prompt(question: str, answer: str, template: int = 0) -> str:
    return TEMPLATES[POINTWISE][template].format(q=question, a=answer)


def pairwise_prompt(question: str, first: str, second: str, template: int = 0) -> str:
    return TEMPLATES[PAIRWISE][template].format(q=question, a=first, b=second)


def reflect_prompt(question: str, answer: str, template: int = 0, response: str | None = None) -> str:
    """Answer-only mode with `answer`; CoT mode (the full wrong response in brackets) when `response` is given."""
    if response is not None:
        return TEMPLATES["reflect_cot"][template].format(q=question, r=response)
    return TEMPLATES[REFLECT][template].format(q=question, a=answer)


def pointwise_example(rng: random.Random, question: str, answer: str, correct: bool) -> dict:
    template = rng.randrange(len(TEMPLATES[POINTWISE]))
    label = YES if correct else NO
    return {"prompt": pointwise_prompt(question, answer, template), "answer": label, "response": label,
            "kind": POINTWISE}


def pairwise_example(rng: random.Random, question: str, correct: str, wrong: str) -> dict:
    template = rng.randrange(len(TEMPLATES[PAIRWISE]))
    correct_first = rng.random() < 0.5
    first, second = (correct, wrong) if correct_first else (wrong, correct)
    label = FIRST if correct_first else SECOND
    return {"prompt": pairwise_prompt(question, first, second, template), "answer": label, "response": label,
            "kind": PAIRWISE}


def reflect_example(rng: random.Random, question: str, wrong_answer: str, truth: str,
                    response: str | None = None) -> dict:
    pool = TEMPLATES["reflect_cot" if response is not None else REFLECT]
    prompt = reflect_prompt(question, wrong_answer, rng.randrange(len(pool)), response)
    return {"prompt": prompt, "answer": truth, "response": truth, "kind": REFLECT,
            "mode": "cot" if response is not None else "answer"}


def recycle(examples: Sequence[dict], completions: Sequence[str], rewards: Sequence[float],
            parsed: Sequence[bool], num_samples: int, rng: random.Random, pairwise_prob: float = 0.7,
            judge_cap: int | None = None, reflect_cap: int | None = None,
            balance_pointwise: bool = False) -> list[dict]:
    """Judge and reflection examples built from one solve batch's rollouts.

    Args:
        examples: the P solve examples ({"prompt", "answer", ...}).
        completions, rewards, parsed: P * K rollout results, the samples of prompt i in rows i*K .. i*K+K-1;
            the extracted answer of a parsed rollout is its stripped completion.
        rng: the only source of randomness.
        pairwise_prob: P(pairwise | mixed group), 0.7 in the paper.
        judge_cap, reflect_cap: most pointwise + pairwise, and reflection, examples kept (None: all).
        balance_pointwise: not in the paper: keep as many "Y" as "N" pointwise examples (a random subset of the
            majority label), before the caps. A weak policy's batch is mostly all-wrong groups, whose pointwise
            examples are all "N", and a judge rewarded on such data learns to always say "N".
    Returns:
        [{"prompt", "answer" (the label), "response" (= the label, for SFT-style packing), "kind", ...}], the judge
        examples first, in prompt order within each kind.
    """
    check(0 <= pairwise_prob <= 1, "method.pairwise_prob", f"must be in [0, 1], got {pairwise_prob}")
    check(len(completions) == len(rewards) == len(parsed) == len(examples) * num_samples, "recycle",
          f"expected {len(examples)} x {num_samples} rollouts, got {len(completions)}")
    judge, reflect = [], []
    half = (len(examples) + 1) // 2
    for i, example in enumerate(examples):
        rows = range(i * num_samples, (i + 1) * num_samples)
        good = [completions[j].strip() for j in rows if parsed[j] and rewards[j] > 0.5]
        bad = [(completions[j].strip(), completions[j]) for j in rows if parsed[j] and rewards[j] <= 0.5]
        question = example["prompt"]
        if good and bad:
            if rng.random() < pairwise_prob:
                judge.append(pairwise_example(rng, question, rng.choice(good), rng.choice(bad)[0]))
            elif rng.random() < 0.5:
                judge.append(pointwise_example(rng, question, rng.choice(good), True))
            else:
                judge.append(pointwise_example(rng, question, rng.choice(bad)[0], False))
        elif good or bad:
            pick = rng.choice(good) if good else rng.choice(bad)[0]
            judge.append(pointwise_example(rng, question, pick, bool(good)))
        if bad:
            answer, response = rng.choice(bad)
            cot = i < half
            reflect.append(reflect_example(rng, question, answer, example["answer"], response if cot else None))
    if balance_pointwise:
        judge = balanced(judge, rng)
    return subsample(judge, judge_cap, rng) + subsample(reflect, reflect_cap, rng)


def balanced(judge: list[dict], rng: random.Random) -> list[dict]:
    """The judge examples with the pointwise majority label cut to the minority's count (order kept)."""
    by_label = {label: [i for i, e in enumerate(judge) if e["kind"] == POINTWISE and e["answer"] == label]
                for label in (YES, NO)}
    keep = min(len(v) for v in by_label.values())
    drop = {i for v in by_label.values() for i in v} - {i for v in by_label.values() for i in rng.sample(v, keep)}
    return [e for i, e in enumerate(judge) if i not in drop]


def subsample(items: list[dict], cap: int | None, rng: random.Random) -> list[dict]:
    """At most `cap` of `items`, a random subset kept in the original order."""
    if cap is None or len(items) <= cap:
        return items
    keep = sorted(rng.sample(range(len(items)), cap))
    return [items[i] for i in keep]


def score_recycled(example: dict, completion: str, solve_reward: Callable[[dict, str], Verdict]) -> Verdict:
    """The verifiable reward of a recycled example: exact match of the stripped completion with the verdict label
    (judge kinds; parsed = it is one of the kind's verdicts), the solve task's reward against the ground truth
    (reflection)."""
    kind = example["kind"]
    if kind in VERDICTS:
        text = completion.strip()
        return Verdict(correct=text == example["answer"], parsed=text in VERDICTS[kind])
    check(kind == REFLECT, "example.kind", f"must be one of {list(KINDS)}, got {kind!r}")
    return solve_reward(example, completion)


class RecycledReward:
    """The reward of SPARK's reward period, `reward(example, completion) -> Verdict` like any other:
    `score_recycled` with the solve task's reward for reflection examples."""

    def __init__(self, solve_reward: Callable[[dict, str], Verdict]):
        self.solve_reward = solve_reward

    def __call__(self, example: dict, completion: str) -> Verdict:
        return score_recycled(example, completion, self.solve_reward)


def synthetic_wrong_answer(rng: random.Random, truth: str) -> str:
    """A plausible wrong answer near the truth (off by 1, 2, 9, 10 or 11, never negative, never the truth) for the
    warm-up's format examples."""
    value = int(truth)
    while True:
        candidate = value + rng.choice((-11, -10, -9, -2, -1, 1, 2, 9, 10, 11))
        if candidate >= 0 and candidate != value:
            return str(candidate)
