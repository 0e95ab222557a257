"""Self-critique selection: the knockout tournament on scripted judges, majority vote, verdict parsing, prompts."""
import pytest

from posttrain.critic import CriticPrompt, judged_choice, knockout, majority_vote, target
from posttrain.utils.config import ConfigError


def judge_by_score(scores):
    """A scripted judge: prefers the response with the higher score ("tie" on equal), recording every call."""
    calls = []

    def judge(pairs):
        calls.append(list(pairs))
        out = []
        for q, a, b in pairs:
            sa, sb = scores[a], scores[b]
            out.append("1" if sa > sb else "2" if sb > sa else "tie")
        return out
    return judge, calls


def test_a_consistent_judge_picks_the_best_candidate_with_n_minus_1_calls():
    scores = {f"c{i}": s for i, s in enumerate([3, 7, 1, 9, 4, 2, 8, 5])}
    judge, calls = judge_by_score(scores)
    winners, n_calls, leaders = knockout([list(scores)], judge)
    assert winners == [3] and n_calls == 7
    # the leader after round r is the winner of the first 2^r candidates: c0; c1 (7 > 3); c3 (9); c3
    assert leaders == [[0], [1], [3], [3]]
    for n, leader in ((2, 1), (4, 3)):
        judge_alone, _ = judge_by_score(scores)
        assert knockout([list(scores)[:n]], judge_alone)[0] == [leader]  # the same as the prefix's own knockout
    # rounds: 4 pairs, then 2, then 1; each round's pairs in order (0 v 1, 2 v 3, ...)
    assert [len(c) for c in calls] == [4, 2, 1]
    assert [(a, b) for _, a, b in calls[0]] == [("c0", "c1"), ("c2", "c3"), ("c4", "c5"), ("c6", "c7")]
    assert [(a, b) for _, a, b in calls[1]] == [("c1", "c3"), ("c4", "c6")]
    assert [(a, b) for _, a, b in calls[2]] == [("c3", "c6")]


def test_odd_counts_give_a_bye_and_questions_are_judged_together():
    scores = {"a": 1, "b": 2, "c": 3, "x": 5, "y": 4}
    judge, calls = judge_by_score(scores)
    winners, n_calls, _ = knockout([["a", "b", "c"], ["x", "y"], ["x"]], judge)
    # q0: a v b -> b, c passes; b v c -> c.  q1: x v y -> x.  q2: one candidate, never judged
    assert winners == [2, 0, 0] and n_calls == 2 + 1
    assert [(q, a, b) for q, a, b in calls[0]] == [(0, "a", "b"), (1, "x", "y")]
    assert calls[1] == [(0, "b", "c")]


def test_ties_and_unreadable_verdicts_keep_the_first_response():
    for verdict in ("tie", None, "1"):
        winners, _, _ = knockout([["p", "q", "r", "s"]], lambda pairs, v=verdict: [v] * len(pairs))
        assert winners == [0]
    winners, _, _ = knockout([["p", "q", "r", "s"]], lambda pairs: ["2"] * len(pairs))  # always the second: the last
    assert winners == [3]


def test_majority_vote_takes_the_most_frequent_answer_earliest_first():
    assert majority_vote(["red", "blue", "blue", None, "red", "blue"]) == 1
    assert majority_vote(["red", "blue"]) == 0            # a tie of counts: the earliest
    assert majority_vote([None, None, "green"]) == 2      # unparsed answers never win
    assert majority_vote([None, None]) == 0


@pytest.mark.parametrize("completion, choice", [
    ("<think>a</think>\\boxed{1}", "1"), ("\\boxed{ 2 }", "2"), ("\\boxed{Response 2}", "2"),
    ("\\boxed{TIE}", "tie"), ("\\boxed{3}", None), ("no box", None), ("\\boxed{1} then \\boxed{2}", "2"),
])
def test_judged_choice(completion, choice):
    assert judged_choice(completion) == choice


def test_prompts_of_each_style():
    short = CriticPrompt.of("short")
    text = short.judge("What colour?", "A", "B")
    assert text.index("What colour?") < text.index("1:A") < text.index("2:B") and text.endswith(short.format_suffix)
    assert short.question("Q?") == "Q?" + short.format_suffix
    paper = CriticPrompt.of("paper")
    assert "<think>" in paper.format_suffix and "\\boxed{}" in paper.format_suffix
    custom = CriticPrompt.of("paper", judge_template="{question}|{response_1}|{response_2}", format_suffix="")
    assert custom.judge("q", "a", "b") == "q|a|b"
    assert target("square red", "red") == "<think>square red</think>\\boxed{red}"
    with pytest.raises(ConfigError, match="data.task.style"):
        CriticPrompt.of("long")
