"""GenerationEvaluator on a stub model whose next token is a fixed function of the last one: every number below
is computed by hand."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from posttrain.evaluators import GenerationEvaluator
from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.processors import SFTCollator, TextProcessor
from posttrain.rewards import ArithmeticVerifier
from posttrain.utils.config import ConfigError

SCALE = 50.0  # logit of the table's token; every other token has logit 0


class Output(dict):
    """A model output as generate reads it: `out["past_key_values"]` and `out.logits`."""

    __getattr__ = dict.__getitem__


class TableModel(nn.Module):
    """logits[t] = SCALE * one_hot(table[input_ids[t]]): the next token is a fixed function of the last one."""

    def __init__(self, table: torch.Tensor, scale: float = SCALE):
        super().__init__()
        self.register_buffer("table", table)
        self.scale, self.config = scale, SimpleNamespace()

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, past_key_values=None):
        logits = self.scale * nn.functional.one_hot(self.table[input_ids], len(self.table)).float()  # (B, T, V)
        return Output(logits=logits, past_key_values=None)


def stub():
    """A model that answers "7" then eos to any prompt."""
    tokenizer = build_char_tokenizer()
    seven, eos = tokenizer.convert_tokens_to_ids("7"), tokenizer.eos_token_id
    table = torch.full((len(tokenizer),), seven)
    table[seven] = eos
    return TableModel(table), tokenizer


def batch(tokenizer, answers):
    examples = [{"prompt": f"{i}+{i}=", "response": a, "answer": a, "index": i} for i, a in enumerate(answers)]
    return SFTCollator(TextProcessor(tokenizer, max_length=32), with_prompts=True)(examples)


def test_accuracy_sampled_accuracy_and_nll_by_hand():
    model, tokenizer = stub()
    evaluator = GenerationEvaluator(reward=ArithmeticVerifier(), max_new_tokens=4, entropy=True, sampled_k=3)
    evaluator.setup(["val"], tokenizer)
    evaluator.update(model, batch(tokenizer, ["7", "8", "7", "77"]), "val", seed=0)
    results = {k: float(v) for k, v in evaluator.compute().items()}
    assert set(results) == {"val/accuracy", "val/nll", "val/entropy", "val/accuracy_sampled"}
    # every completion is "7": right for the answers "7", "7"; wrong for "8", "77"
    assert results["val/accuracy"] == 0.5 and results["val/accuracy_sampled"] == 0.5
    # response tokens: "7" eos | "8" eos | "7" eos | "7" "7" eos = 9. The table predicts "7" after a prompt token and
    # eos after "7": wrong for "8", for the eos after "8" (it predicts "7") and for the second "7" of "77".
    # −log p = log(1 + (V−1) e^−S) when right, S + that when wrong.
    vocab = len(tokenizer)
    right = math.log1p((vocab - 1) * math.exp(-SCALE))
    assert results["val/nll"] == pytest.approx((6 * right + 3 * (SCALE + right)) / 9, rel=1e-5)
    assert 0 <= results["val/entropy"] < 1e-12 * vocab * SCALE  # one-hot predictions: (almost) no entropy
    assert evaluator.compute() == {}  # reset after compute


def test_without_a_reward_the_data_check_decides_and_one_of_them_is_needed():
    model, tokenizer = stub()
    evaluator = GenerationEvaluator(max_new_tokens=4)
    evaluator.setup(["val"], tokenizer, is_correct=lambda example, completion: example["index"] == 1)
    evaluator.update(model, batch(tokenizer, ["7", "8"]), "val", seed=0)
    assert float(evaluator.compute()["val/accuracy"]) == 0.5  # only example 1 counts as right
    with pytest.raises(ConfigError, match=r"method\.evaluator\.reward"):
        GenerationEvaluator().setup(["val"], tokenizer, is_correct=None)


@pytest.mark.parametrize("kwargs, key", [({"sampled_k": -1}, "sampled_k"), ({"max_new_tokens": 0}, "max_new_tokens"),
                                         ({"sampled_temperature": 0}, "sampled_temperature")])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^method\.evaluator\.{key}"):
        GenerationEvaluator(**kwargs)


def test_sampled_completions_use_fixed_noise():
    tokenizer = build_char_tokenizer()
    model = TableModel(torch.zeros(len(tokenizer), dtype=torch.long), scale=0.0)  # uniform: samples are pure noise
    evaluator = GenerationEvaluator(max_new_tokens=6, sampled_k=2)
    evaluator.setup(["val"], tokenizer, is_correct=lambda e, c: False)
    prompts = batch(tokenizer, ["1"])
    first = evaluator.sampled_completions(model, prompts, 2, seed=3)
    assert first == evaluator.sampled_completions(model, prompts, 2, seed=3)
    assert first != evaluator.sampled_completions(model, prompts, 2, seed=4)


def test_image_grids_reach_tensorboard(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from posttrain.evaluators import write_image_grids

    logger = TensorBoardLogger(str(tmp_path), name="run")
    grids = {"val": torch.rand(3, 8, 16), "test": torch.rand(3, 8, 8)}
    write_image_grids([logger, object()], grids, "samples", step=7)  # a logger without images is passed over
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["test/samples", "val/samples"]
    (image,) = events.Images("val/samples")
    assert (image.step, image.width, image.height) == (7, 16, 8)
