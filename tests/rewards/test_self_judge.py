"""Test-time self-reflection on stub judges with known behaviour; the model-backed judge on a tiny model."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from posttrain.models import tiny_llama
from posttrain.processors import TextProcessor
from posttrain.rewards.judges import verdict_token_ids
from posttrain.rewards.recycling import pairwise_prompt, pointwise_prompt
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
    assert math.isnan(balanced_accuracy(torch.tensor([True]), torch.tensor([True])))  # one class present
    assert math.isnan(balanced_accuracy(torch.tensor([], dtype=torch.bool), torch.tensor([], dtype=torch.bool)))


class StubLM(nn.Module):
    """Next-token logits set by hand: per prompt text (looked up by substring of the decoded prompt), a logit for
    some tokens; every other token gets a logit of 5, above both verdicts, so only a softmax restricted to the
    verdict tokens gives the expected probabilities."""

    def __init__(self, tokenizer, table: dict[str, dict[int, float]]):
        super().__init__()
        self.tokenizer, self.table = tokenizer, table
        self.anchor = nn.Parameter(torch.zeros(()))
        self.modes = []

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False):
        self.modes.append(self.training)
        logits = torch.full((*input_ids.shape, len(self.tokenizer)), 5.0)
        for b, row in enumerate(input_ids):
            text = self.tokenizer.decode(row[attention_mask[b].bool()].tolist(), skip_special_tokens=True)
            (entry,) = [v for k, v in self.table.items() if k in text]
            for token, value in entry.items():
                logits[b, -1, token] = value
        return SimpleNamespace(logits=logits)


def test_model_judge_probabilities_are_the_verdict_softmax_of_hand_set_logits():
    _, tokenizer = tiny_llama(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, seed=1)
    yes, no = verdict_token_ids(tokenizer, ["Y", "N"])
    a, b = verdict_token_ids(tokenizer, ["A", "B"])
    model = StubLM(tokenizer, {pointwise_prompt("1+1=", "2"): {yes: 2.0, no: 0.0},
                               pointwise_prompt("12+30=", "41"): {yes: -1.0, no: 1.0},
                               pairwise_prompt("1+1=", "2", "3"): {a: 0.0, b: math.log(3.0)}})
    model.train()
    judge = SelfJudge(model, TextProcessor(tokenizer), max_new_tokens=3, batch_size=1)
    p = judge.p_correct(["1+1=", "12+30="], ["2", "41"])
    # P(Y) = e^{l_Y} / (e^{l_Y} + e^{l_N}) = sigmoid(l_Y - l_N)
    torch.testing.assert_close(p, torch.tensor([1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0))]))
    assert float(judge.p_first(["1+1="], ["2"], ["3"])) == pytest.approx(0.25)  # 1 / (1 + 3)
    assert model.modes == [False, False, False] and model.training  # judged in eval mode, mode restored


def test_revise_gives_one_stripped_answer_per_prompt():
    model, tokenizer = tiny_llama(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, seed=1)
    revised = SelfJudge(model, TextProcessor(tokenizer), max_new_tokens=3, batch_size=2).revise(
        ["1+1=", "2+2=", "3+3="], ["3", "5", "7"])
    assert len(revised) == 3 and all(isinstance(r, str) and r == r.strip() for r in revised)
