"""The online core as functions over explicit arguments: settings, the rollout with dynamic sampling's refill
drawn from a given prompt source, and the training-prompt source built from a dataloader."""
import zlib

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_modules.online import OnlineSettings, TrainingPrompts, online_settings
from posttrain.models.builders import tiny_llama
from posttrain.processors import SFTCollator, TextProcessor
from posttrain.rewards import Verdict
from posttrain.rollouts import RolloutSettings, mixed_prompts, rollout
from posttrain.utils.config import ConfigError

TINY = {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "intermediate_size": 64}


def examples(n):
    return [{"prompt": f"{i}+1=", "response": str(i + 1), "answer": str(i + 1), "index": i} for i in range(n)]


class CountingReward:
    """Right when the completion's crc32 is even (about half of all completions), and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, example, completion):
        self.calls += 1
        return Verdict(correct=zlib.crc32(completion.encode()) % 2 == 0, parsed=True)


def test_online_settings_are_checked_and_frozen():
    settings = online_settings(4, 2, None, 1.0, {"temperature": 0.7}, True, 3, seed=5)
    assert settings.rollout == RolloutSettings(num_samples=4, temperature=0.7, max_new_tokens=8,
                                               truncated_is_wrong=True, max_generation_batches=3)
    assert settings.loss_normalizer == 2 * 4 and settings.seed == 5
    assert OnlineSettings(settings.rollout, 2, 3.0, None, 0).loss_normalizer == 3.0
    with pytest.raises(AttributeError):
        settings.seed = 1  # frozen: no module can change another's settings
    for args, key in (((1, 2, None, 1.0, None, True, 1, 0), "method.num_samples"),
                      ((4, 0, None, 1.0, None, True, 1, 0), "method.prompts_per_minibatch"),
                      ((4, 2, 0.0, 1.0, None, True, 1, 0), "method.normalizer"),
                      ((4, 2, None, 1.0, None, True, 0, 0), "method.max_generation_batches"),
                      ((4, 2, None, 1.0, {"temperature": 0}, True, 1, 0), "method.generation.temperature")):
        with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.")):
            online_settings(*args)


def test_training_prompts_draw_from_the_dataloader_as_its_batches_are_collated():
    _, tokenizer = tiny_llama(**TINY)
    collate = SFTCollator(TextProcessor(tokenizer, max_length=32), with_prompts=True)
    loader = DataLoader(examples(10), batch_size=4, collate_fn=collate)
    draw = TrainingPrompts(loader.dataset, loader.collate_fn, torch.device("cpu"))
    batch = draw(3, torch.Generator().manual_seed(0))
    picks = torch.randint(10, (3,), generator=torch.Generator().manual_seed(0)).tolist()
    assert [e["index"] for e in batch["examples"]] == picks
    expected = collate([examples(10)[i] for i in picks])
    assert torch.equal(batch["prompt_input_ids"], expected["prompt_input_ids"])


def test_rollout_refills_the_batch_with_mixed_groups_from_the_given_source():
    model, tokenizer = tiny_llama(**TINY)
    encoder = TextProcessor(tokenizer, max_length=32)
    collate = SFTCollator(encoder, with_prompts=True)
    batch, pool = collate(examples(4)), examples(40)
    drawn = []

    def draw(n, generator):
        picks = torch.randint(len(pool), (n,), generator=generator).tolist()
        drawn.append(picks)
        return collate([pool[i] for i in picks])

    reward = CountingReward()
    settings = RolloutSettings(num_samples=2, max_new_tokens=4, truncated_is_wrong=False, max_generation_batches=6)
    out = rollout(model, batch, encoder, reward, settings, torch.Generator().manual_seed(0), draw)
    assert out.generation_batches > 1  # this seed leaves the own batch short of mixed groups
    assert out.generation_batches == 1 + len(drawn) and reward.calls == 2 * 4 * out.generation_batches
    assert out.batch_prompts == 4 and out.first_prompts == 4  # the step's own batch comes first
    own = mixed_prompts(out).lt(4).sum().item()
    added = out.num_prompts - 4  # only mixed groups are added, at most up to 4 mixed prompts in all
    assert (mixed_prompts(out) >= 4).sum() == added and own + added <= 4
    assert own + added == 4 or out.generation_batches == settings.max_generation_batches
    # the same generator seed draws the same rollout (a resumed run repeats its steps)
    again = rollout(model, batch, encoder, CountingReward(), settings, torch.Generator().manual_seed(0), draw)
    assert torch.equal(again.input_ids, out.input_ids) and torch.equal(again.rewards, out.rewards)
    # without dynamic sampling no prompt is drawn
    drawn.clear()
    single = rollout(model, batch, encoder, CountingReward(), RolloutSettings(2, max_new_tokens=4),
                     torch.Generator().manual_seed(0), draw)
    assert single.generation_batches == 1 and not drawn
