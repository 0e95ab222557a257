"""Test-time self-reflection on stub judges with known behaviour; the model-backed judge on a tiny model."""
import torch

from datamodules.collate import Encoder
from posttrain.models import tiny_llama
from posttrain.rewards.judges import encode_prompts, verdict_logprobs
from posttrain.rewards.recycling import pointwise_prompt
from posttrain.rewards.self_judge import SelfJudge, balanced_accuracy, self_reflection

QUESTIONS = ["1+1=", "2+2=", "3+3=", "4+4="]
TRUTH = ["2", "4", "6", "8"]


def is_correct(i, answer):
    return answer == TRUTH[i]


def test_a_perfect_judge_with_a_perfect_reviser_fixes_everything_in_one_round():
    calls = []

    def judge(questions, answers):
        calls.append(list(questions))
        return torch.tensor([float(a == TRUTH[QUESTIONS.index(q)]) for q, a in zip(questions, answers)])

    def revise(questions, answers):
        return [TRUTH[QUESTIONS.index(q)] for q in questions]

    history = self_reflection(QUESTIONS, ["2", "5", "6", "0"], judge, revise, is_correct, rounds=3)
    assert [sum(h) / 4 for h in history] == [0.5, 1.0, 1.0, 1.0]
    # round 1 judges all four; round 2 re-judges the two revised answers, accepts them; nothing is left after that
    assert calls == [QUESTIONS, ["2+2=", "4+4="]]


def test_an_always_yes_judge_never_revises_and_an_always_no_judge_keeps_revising():
    revisions = []

    def revise(questions, answers):
        revisions.append(len(questions))
        return [str(int(a) + 1) for a in answers]  # walks one step up each round

    answers = ["0", "3", "6", "5"]
    yes = self_reflection(QUESTIONS, answers, lambda q, a: torch.ones(len(q)), revise, is_correct, rounds=2)
    assert [sum(h) for h in yes] == [1, 1, 1] and revisions == []
    no = self_reflection(QUESTIONS, answers, lambda q, a: torch.zeros(len(q)), revise, is_correct, rounds=3)
    # answers after rounds: [1,4,7,6] -> [2,5,8,7] -> [3,6,9,8]: a wrong judge also breaks correct answers
    assert [h for h in no] == [[False, False, True, False], [False, True, False, False],
                               [True, False, False, False], [False, False, False, True]]
    assert revisions == [4, 4, 4]


def test_balanced_accuracy_by_hand():
    predicted = torch.tensor([True, True, True, False, True])
    labels = torch.tensor([True, True, False, False, False])
    assert abs(balanced_accuracy(predicted, labels) - (1.0 + 1 / 3) / 2) < 1e-6
    assert balanced_accuracy(torch.tensor([True]), torch.tensor([True])) == 1.0  # one class present


def test_model_judge_probabilities_are_the_restricted_verdict_softmax():
    model, tokenizer = tiny_llama(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, seed=1)
    encoder = Encoder(tokenizer)
    judge = SelfJudge(model, encoder, max_new_tokens=3, batch_size=2)
    p = judge.p_correct(["1+1=", "12+30="], ["2", "41"])
    ids, mask = encode_prompts(encoder, [pointwise_prompt("1+1=", "2"), pointwise_prompt("12+30=", "41")], "cpu")
    torch.testing.assert_close(p, verdict_logprobs(model, ids, mask, judge.yes_no)[:, 0].exp())
    p_ab, p_ba = judge.p_first(["1+1="], ["2"], ["3"]), judge.p_first(["1+1="], ["3"], ["2"])
    assert 0 < float(p_ab) < 1 and 0 < float(p_ba) < 1
    revised = judge.revise(["1+1=", "2+2=", "3+3="], ["3", "5", "7"])
    assert len(revised) == 3 and all(isinstance(r, str) for r in revised)
