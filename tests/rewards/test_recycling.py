"""SPARK's recycling rules, by hand: which groups give which examples, labels, slots, caps and determinism."""
import random

import pytest

from posttrain.rewards import ArithmeticVerifier, Verdict
from posttrain.rewards.recycling import (
    NO,
    PAIRWISE,
    POINTWISE,
    REFLECT,
    TEMPLATES,
    YES,
    RecycledReward,
    recycle,
    score_recycled,
)
from posttrain.utils.config import ConfigError

K = 4


def group(question, truth, answers, parsed=None):
    """One solve example and its K rollouts: the rewards are exact matches with the truth."""
    return ({"prompt": question, "answer": truth}, list(answers), [float(a.strip() == truth) for a in answers],
            list(parsed if parsed is not None else [True] * len(answers)))


def build(groups, seed=0, **kwargs):
    examples = [g[0] for g in groups]
    completions = [c for g in groups for c in g[1]]
    rewards = [r for g in groups for r in g[2]]
    parsed = [p for g in groups for p in g[3]]
    return recycle(examples, completions, rewards, parsed, K, random.Random(seed), **kwargs)


def test_all_correct_group_gives_one_yes_pointwise_and_no_reflection():
    out = build([group("1+2=", "3", ["3"] * K)])
    assert len(out) == 1 and out[0]["kind"] == POINTWISE and out[0]["answer"] == YES
    assert out[0]["prompt"] in {t.format(q="1+2=", a="3") for t in TEMPLATES[POINTWISE]}


def test_all_wrong_group_gives_one_no_pointwise_and_one_reflection_to_the_truth():
    out = build([group("1+2=", "3", ["4", "5", "4", "2"])] * 1)
    kinds = [e["kind"] for e in out]
    assert kinds == [POINTWISE, REFLECT]
    assert out[0]["answer"] == NO and out[1]["answer"] == "3" and out[1]["response"] == "3"
    assert any(w in out[1]["prompt"] for w in ("4", "5", "2")) and "3" not in out[1]["prompt"].split("=", 1)[1]


def test_mixed_groups_give_pairwise_with_probability_point_seven_and_balanced_pointwise():
    groups = [group(f"{i}+1=", str(i + 1), [str(i + 1), str(i + 2), str(i + 1), str(i + 3)]) for i in range(2000)]
    judge = [e for e in build(groups, seed=3) if e["kind"] != REFLECT]
    assert len(judge) == 2000  # one judge example per group, no cap
    pairwise = [e for e in judge if e["kind"] == PAIRWISE]
    assert abs(len(pairwise) / 2000 - 0.7) < 0.035
    yes = sum(e["answer"] == YES for e in judge if e["kind"] == POINTWISE)
    assert abs(yes / (2000 - len(pairwise)) - 0.5) < 0.06  # the class is drawn at random in mixed groups
    first = sum(e["answer"] == "A" for e in pairwise) / len(pairwise)
    assert 0.45 < first < 0.55  # the correct answer's slot is random


def test_pairwise_label_points_at_the_correct_answer():
    out = build([group("7+5=", "12", ["12", "13", "11", "12"])], seed=0, pairwise_prob=1.0)
    pair = [e for e in out if e["kind"] == PAIRWISE]
    assert len(pair) == 1
    prompt, label = pair[0]["prompt"], pair[0]["answer"]
    for template in TEMPLATES[PAIRWISE]:
        for wrong in ("13", "11"):
            for a, b, correct in (("12", wrong, "A"), (wrong, "12", "B")):
                if prompt == template.format(q="7+5=", a=a, b=b):
                    assert label == correct
                    return
    pytest.fail(f"unexpected pairwise prompt {prompt!r}")


def test_no_pairs_without_a_mixed_group():
    out = build([group("1+1=", "2", ["2"] * K), group("2+2=", "4", ["5"] * K)], pairwise_prob=1.0)
    assert not any(e["kind"] == PAIRWISE for e in out)


def test_reflection_only_from_wrong_answers_cot_mode_for_the_first_half():
    groups = [group(f"{i}+0=", str(i), [str(i), str(i + 10), str(i), str(i)]) for i in range(4)]
    reflect = [e for e in build(groups) if e["kind"] == REFLECT]
    assert [e["answer"] for e in reflect] == ["0", "1", "2", "3"]
    assert [e["mode"] for e in reflect] == ["cot", "cot", "answer", "answer"]
    for i, e in enumerate(reflect):
        assert str(i + 10) in e["prompt"]  # the group's only wrong answer
        assert ("[" in e["prompt"]) == (e["mode"] == "cot")


def test_unparsed_rollouts_are_dropped():
    unparsed = group("1+2=", "3", ["x", "y", "z", "w"], parsed=[False] * K)
    assert build([unparsed]) == []
    # the only wrong rollout is unparsed: the group counts as all-correct (no pair, no reflection)
    out = build([group("1+2=", "3", ["3", "3", "3", "oops"], parsed=[True, True, True, False])], pairwise_prob=1.0)
    assert [(e["kind"], e["answer"]) for e in out] == [(POINTWISE, YES)]


def test_caps_limit_judge_and_reflection_examples_per_batch():
    groups = [group(f"{i}+1=", str(i + 1), [str(i + 1), str(i + 5), "0", str(i + 1)]) for i in range(10)]
    out = build(groups, judge_cap=3, reflect_cap=2)
    assert sum(e["kind"] != REFLECT for e in out) == 3 and sum(e["kind"] == REFLECT for e in out) == 2


def test_recycling_is_deterministic_given_the_seed():
    groups = [group(f"{i}+1=", str(i + 1), [str(i + 1), str(i + 2), str(i + 1), str(i + 3)]) for i in range(20)]
    assert build(groups, seed=5, judge_cap=6) == build(groups, seed=5, judge_cap=6)
    assert build(groups, seed=5) != build(groups, seed=6)


def test_bad_pairwise_probability_names_the_key():
    with pytest.raises(ConfigError, match="method.pairwise_prob"):
        build([group("1+1=", "2", ["2"] * K)], pairwise_prob=1.5)


@pytest.mark.parametrize("completion, correct, parsed", [("Y", True, True), (" Y\n", True, True),
                                                         ("N", False, True), ("y", False, False),
                                                         ("Yes", False, False), ("", False, False)])
def test_verdicts_are_scored_by_exact_match(completion, correct, parsed):
    example = {"prompt": "J1:1+1=2?", "answer": YES, "kind": POINTWISE}
    assert score_recycled(example, completion, solve_reward=None) == Verdict(correct=correct, parsed=parsed)


def test_pairwise_and_reflection_scoring():
    pair = {"prompt": "J2:1+1=(A)3(B)2", "answer": "B", "kind": PAIRWISE}
    assert score_recycled(pair, "B", None).correct and not score_recycled(pair, "A", None).correct
    reflect = {"prompt": "R:1+1=3 fix", "answer": "2", "kind": REFLECT}

    reward = RecycledReward(ArithmeticVerifier())  # reflection: the solve task's reward against the ground truth
    assert reward(reflect, " 2\n") == Verdict(correct=True, parsed=True)
    assert reward(reflect, "3") == Verdict(correct=False, parsed=True)
    assert reward(reflect, "x") == Verdict(correct=False, parsed=False)
    assert reward(pair, "B").correct and not reward(pair, "Y").parsed  # judge kinds: exact match of the verdict
    with pytest.raises(ConfigError, match="kind"):
        reward({"answer": "x", "kind": "other"}, "x")


def test_balanced_pointwise_keeps_as_many_yes_as_no():
    groups = [group(f"{i}+1=", str(i + 1), ["0"] * K) for i in range(6)]  # all wrong: six "N"
    groups += [group(f"{i}+2=", str(i + 2), [str(i + 2)] * K) for i in range(2)]  # all right: two "Y"
    out = build(groups, balance_pointwise=True)
    labels = [e["answer"] for e in out if e["kind"] == POINTWISE]
    assert sorted(labels) == [NO, NO, YES, YES]
    assert sum(e["kind"] == REFLECT for e in out) == 6  # reflection is untouched
    assert len([e for e in build(groups) if e["kind"] == POINTWISE]) == 8
