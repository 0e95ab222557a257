"""DecompositionTask, the exact support measures and SupportEvaluator: values computed by hand."""
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from datamodules.tasks import DecompositionTask
from datamodules.tasks.decomposition import DEFAULT_PROBS, distribution, parse
from posttrain.evaluators import SupportEvaluator
from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.processors import SFTCollator, TextProcessor
from posttrain.rewards import ExactMatchVerifier
from posttrain.support import support_measures
from posttrain.utils.config import ConfigError


def test_the_distribution_of_a_prompt_and_its_mode():
    odd, even = distribution(13, DEFAULT_PROBS), distribution(12, DEFAULT_PROBS)
    assert odd[7] == ["7+6", 0.30] and odd[0] == ["0+13", 0.02] and len(odd) == 10
    assert even[2] == ["2+10", 0.30] and even[9] == ["9+3", 0.02]  # reversed for even n
    example = DecompositionTask(train_size=0, train_prompts=0, val_size=1, test_size=0).examples("val")[0]
    n = int(example["prompt"][:-1])
    assert example["answer"] == (f"7+{n - 7}" if n % 2 else f"2+{n - 2}")
    assert math.isclose(sum(p for _, p in example["support"]), 1.0)


@pytest.mark.parametrize("text, n, digit", [("7+6", 13, 7), (" 7+6\n", 13, 7), ("0+13", 13, 0), ("7+5", 13, None),
                                             ("7+06", 13, None), ("07+6", 13, None), ("13", 13, None),
                                             ("7+6+0", 13, None), ("10+3", 13, None)])
def test_validity(text, n, digit):
    assert parse(text, n) == digit
    assert DecompositionTask.is_valid({"prompt": f"{n}="}, text) == (digit is not None)


def test_splits_are_disjoint_seeded_and_sampled_from_the_distribution():
    task = DecompositionTask(train_prompts=50, train_size=4000, val_size=30, test_size=40, seed=1)
    assert task.examples("train") == DecompositionTask(train_prompts=50, train_size=4000, val_size=30, test_size=40,
                                                       seed=1).examples("train")
    numbers = {split: {e["prompt"] for e in task.examples(split)} for split in ("train", "val", "test")}
    assert (len(numbers["train"]), len(numbers["val"]), len(numbers["test"])) == (50, 30, 40)
    assert not numbers["train"] & numbers["val"] and not numbers["train"] & numbers["test"]
    assert not numbers["val"] & numbers["test"]
    train = task.examples("train")
    assert all(DecompositionTask.is_valid(e, e["response"]) for e in train)
    # the digit of the odd numbers' responses follows DEFAULT_PROBS: within 5 binomial sds of each probability
    odd = [e for e in train if int(e["prompt"][:-1]) % 2]
    counts = Counter(int(e["response"][0]) for e in odd)
    for d, p in enumerate(DEFAULT_PROBS):
        assert abs(counts[d] / len(odd) - p) < 5 * math.sqrt(p * (1 - p) / len(odd))


@pytest.mark.parametrize("kwargs, key", [({"numbers": [5, 99]}, "numbers"), ({"probs": [0.1] * 9}, "probs"),
                                         ({"probs": [0.5, 0.5] + [0.0] * 8}, "probs"),
                                         ({"train_prompts": 900}, "data.task"), ({"train_size": -1}, "train_size")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DecompositionTask(**kwargs)


def test_support_measures_by_hand():
    # row 0: p_data = (0.75, 0.25), p_θ = (0.5, 0.25) and 0.25 outside the support; row 1: p_θ = p_data on a
    # support of 3 strings, with a padding column (p_data 0, any log-prob)
    data = torch.tensor([[0.75, 0.25, 0.0, 0.0], [0.5, 0.25, 0.25, 0.0]], dtype=torch.float64)
    model = torch.tensor([[0.5, 0.25, 1.0, 1.0], [0.5, 0.25, 0.25, 0.7]], dtype=torch.float64).log()
    model[0, 3] = float("-inf")
    out = support_measures(model, data)
    assert out["valid"].tolist() == pytest.approx([0.75, 1.0])
    # tv = ½(|0.5−0.75| + |0.25−0.25|) + ½·0.25 = 0.25
    assert out["tv"].tolist() == pytest.approx([0.25, 0.0], abs=1e-12)
    # kl = 0.75 log(0.75/0.5) + 0.25 log(0.25/0.25)
    assert out["kl"].tolist() == pytest.approx([0.75 * math.log(1.5), 0.0], abs=1e-12)


class Output(dict):
    """A model output as generate reads it: `out["past_key_values"]` and `out.logits`."""

    __getattr__ = dict.__getitem__


class UnigramModel(nn.Module):
    """Next-token probabilities q, whatever the input: p_θ(y|x) = Π_j q(y_j)."""

    def __init__(self, q: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", q.clamp(min=1e-30).log())
        self.config = SimpleNamespace()

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, past_key_values=None):
        logits = self.logits.expand(*input_ids.shape, -1)  # (B, T, V)
        return Output(logits=logits, past_key_values=None)


def test_support_evaluator_by_hand():
    tokenizer = build_char_tokenizer()
    q = torch.zeros(len(tokenizer))
    for token, p in (("7", 0.4), ("+", 0.2), ("6", 0.2), (tokenizer.eos_token, 0.2)):
        q[tokenizer.convert_tokens_to_ids(token)] = p
    example = {"prompt": "13=", "response": "7+6", "answer": "7+6", "support": distribution(13, DEFAULT_PROBS),
               "index": 0}
    batch = SFTCollator(TextProcessor(tokenizer, max_length=32), with_prompts=True)([example])
    evaluator = SupportEvaluator(reward=ExactMatchVerifier(), max_new_tokens=6, support_batch_size=3)
    evaluator.setup(["val"], tokenizer)
    evaluator.update(UnigramModel(q), batch, "val", seed=0)
    results = {k: float(v) for k, v in evaluator.compute().items()}
    # "7+6" and "6+7" have p_θ = 0.4·0.2·0.2·0.2 = 0.0032 each (eos included); every other support string holds a
    # token of probability 0; greedy decoding writes "7777..." (never the mode "7+6")
    assert results["val/valid"] == pytest.approx(0.0064)
    # tv = ½(|0.0032−0.30| + |0.0032−0.13| + (1 − 0.43)) + ½(1 − 0.0064)
    assert results["val/tv"] == pytest.approx(0.5 * (0.2968 + 0.1268 + 0.57) + 0.5 * 0.9936)
    # kl = Σ_d π(d) (log π(d) − Σ_tokens log q(token)), q = 1e-30 for the tokens the model never writes (float32)
    floor = float(torch.tensor(1e-30).log())
    log_q = {"7": math.log(0.4), "+": math.log(0.2), "6": math.log(0.2), "": math.log(0.2)}
    kl = sum(p * (math.log(p) - sum(log_q.get(c, floor) for c in [*text, ""])) for text, p in example["support"])
    assert results["val/kl"] == pytest.approx(kl, rel=1e-5)
    assert results["val/accuracy"] == 0.0
    assert results["val/nll"] == pytest.approx(-math.log(0.0032) / 4, rel=1e-5)  # 4 response tokens
