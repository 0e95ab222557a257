import pytest
import torch

from posttrain.metrics import expected_calibration_error
from posttrain.models import tiny_llama
from posttrain.models.value_head import ValueModel
from posttrain.processors import TextProcessor
from posttrain.rewards.judges import PairwiseJudge, encode_prompts, verdict_logprobs, verdict_token_ids
from posttrain.utils.config import ConfigError


@pytest.fixture(scope="module")
def judge():
    model, tokenizer = tiny_llama(seed=3)
    return PairwiseJudge(model, TextProcessor(tokenizer))


def test_symmetric_preference_is_antisymmetric(judge):
    prompts, y, other = ["12+5=", "3*4="], ["17", "12"], ["18", "7"]
    forward = judge.symmetric(prompts, y, other)
    backward = judge.symmetric(prompts, other, y)
    torch.testing.assert_close(forward + backward, torch.ones(2))
    # antisymmetry alone holds with the slots swapped too; pin y to slot A of the first order
    expected = 0.5 * (judge.probability(prompts, y, other) + 1 - judge.probability(prompts, other, y))
    torch.testing.assert_close(forward, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(forward, 1 - forward, atol=1e-4)  # a swap of the slots would give 1 - forward


def test_verdict_probabilities_match_the_full_softmax_restricted(judge):
    ids, mask = encode_prompts(judge.encoder, judge.texts(["1+1="], ["2"], ["3"]), "cpu")
    logits = judge.model(input_ids=ids, attention_mask=mask).logits[:, -1]  # unpadded row: no position shift
    pair = logits[:, judge.verdict_ids].softmax(-1)
    torch.testing.assert_close(verdict_logprobs(judge.model, ids, mask, judge.verdict_ids).exp(), pair)


def test_left_padding_does_not_change_the_verdict(judge):
    alone = judge.probability(["1+1="], ["2"], ["3"])
    padded = judge.probability(["1+1=", "123+456="], ["2", "579"], ["3", "580"])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_multi_token_verdict_is_a_config_error():
    _, tokenizer = tiny_llama()
    with pytest.raises(ConfigError, match="single known token"):
        verdict_token_ids(tokenizer, ["Yes", "No"])


def test_value_model_scores_the_last_real_token():
    model, _ = tiny_llama(seed=1)
    critic = ValueModel(model)
    torch.nn.init.normal_(critic.head.weight)
    ids = torch.tensor([[1, 20, 21, 22], [1, 20, 21, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    values = critic(ids, mask)
    assert values.shape == (2, 4)
    torch.testing.assert_close(critic.score(ids, mask), torch.stack([values[0, 3], values[1, 2]]))
    torch.testing.assert_close(values[0, :3], values[1, :3], atol=1e-5, rtol=1e-5)  # causal: padding is after


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([0.95, 0.95, 0.15, 0.15, 0.55])
    labels = torch.tensor([1, 0, 0, 0, 1])
    # bins: 0.95 -> |1 - 1.9| = 0.9; 0.15 -> |0 - 0.3| = 0.3; 0.55 -> |1 - 0.55| = 0.45; sum / 5
    assert expected_calibration_error(probs, labels).item() == pytest.approx((0.9 + 0.3 + 0.45) / 5)
    assert expected_calibration_error(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])).item() == 0
