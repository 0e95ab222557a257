import dataclasses
import json
import os

import pytest
import torch

from datamodules.jsonl import DataError
from datamodules.prompts import JsonlPromptTask, PromptDataModule
from datamodules.tasks import ArithmeticTask
from posttrain.models import tiny_llama
from posttrain.rewards import ArithmeticVerifier, GSM8KVerifier
from posttrain.rollouts import (
    Rollout,
    RolloutSettings,
    collect_rollout,
    group_advantages,
    group_statistics,
    minibatch_rows,
    mixed_prompts,
)
from tests.helpers import SHARED

GSM8K_TEST = os.path.join(SHARED, "data", "gsm8k", "test.jsonl")


def arithmetic_datamodule(tokenizer, **kwargs):
    task = ArithmeticTask(digits=[1, 2], ood_digits=[2, 3], train_size=40, val_size=8, test_ood_size=8)
    dm = PromptDataModule(tokenizer, task, batch_size=4, max_length=64, **kwargs)
    dm.setup("fit")
    return dm


def test_training_batches_carry_sft_rows_prompts_and_examples():
    _, tok = tiny_llama()
    dm = arithmetic_datamodule(tok)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == batch["prompt_input_ids"].shape[0] == len(batch["examples"]) == 4
    assert (batch["labels"] != -100).any()
    assert dm.is_correct(batch["examples"][0], batch["examples"][0]["answer"])


def test_rollout_rows_logprobs_and_rewards():
    model, tok = tiny_llama()
    dm = arithmetic_datamodule(tok)
    batch = next(iter(dm.train_dataloader()))
    rollout = collect_rollout(model, batch, dm.processor, ArithmeticVerifier(), RolloutSettings(3, max_new_tokens=5),
                              generator=torch.Generator().manual_seed(0))
    assert rollout.input_ids.shape[0] == 12 and rollout.num_prompts == 4
    assert rollout.mask.shape == rollout.old_logps.shape
    assert (rollout.old_logps[rollout.mask] < 0).all() and (rollout.old_logps[~rollout.mask] == 0).all()
    assert (rollout.rewards == 0).all()  # a random model answers nothing right
    # rows of one group share their prompt
    prompt_len = (rollout.labels[0] == -100).sum()
    assert torch.equal(rollout.input_ids[0, :prompt_len], rollout.input_ids[2, :prompt_len])
    stats = group_statistics(rollout)
    assert stats["groups_all_wrong"] == 1 and stats["reward_mean"] == 0
    # the recorded log-probs are the policy's own at temperature 1
    from posttrain.rollouts import policy_logprobs
    rows = rollout.rows(torch.arange(12))
    logps = policy_logprobs(model.eval(), rows)
    torch.testing.assert_close(logps[rows["mask"]], rows["old_logps"][rows["mask"]], atol=1e-4, rtol=0)


def test_group_helpers():
    rewards = torch.tensor([[1.0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    adv = group_advantages(rewards, scale=False)
    torch.testing.assert_close(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    assert (group_advantages(rewards)[1:3] == 0).all()
    torch.testing.assert_close(group_advantages(rewards, eps=0)[3], torch.tensor([3.0, -1, -1, -1]) / 3**0.5)
    rows = minibatch_rows(torch.tensor([0, 3]), 4, 1)
    assert [r.tolist() for r in rows] == [[0, 1, 2, 3], [12, 13, 14, 15]]


def test_group_statistics_count_a_graded_rewards_correctness_and_the_sampled_nll():
    # two prompts x K = 2: 0.9 · correct + 0.1 · format; prompt 0 both formatted and wrong (all wrong, rewards 0.1),
    # prompt 1 one right (1.0) and one unformatted wrong (0.0); log π_old of the sampled tokens hand-set
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    old_logps = torch.tensor([[-1.0, -3.0, 0], [-2.0, 0, 0], [-0.5, -0.5, -0.5], [-4.5, 0, 0]])
    ids = torch.zeros(4, 4, dtype=torch.long)
    rollout = Rollout(input_ids=ids, attention_mask=ids + 1, labels=ids, old_logps=old_logps, mask=mask,
                      rewards=torch.tensor([0.1, 0.1, 1.0, 0.0]), parsed=torch.ones(4, dtype=torch.bool),
                      finished=torch.ones(4, dtype=torch.bool), num_samples=2,
                      correct=torch.tensor([False, False, True, False]))
    stats = group_statistics(rollout)
    assert stats["groups_all_wrong"] == 0.5 and stats["groups_all_correct"] == 0
    assert stats["accuracy"] == 0.25 and stats["groups_mixed"] == 0.5  # prompt 1's rewards differ (1.0, 0.0)
    torch.testing.assert_close(stats["sampled_nll"], torch.tensor(12.0 / 7))  # (1 + 3 + 2 + 1.5 + 4.5) / 7
    # without recorded correctness the rewards are it (0/1 verifiers): 0.1 then reads as not all wrong
    plain = group_statistics(dataclasses.replace(rollout, correct=None))
    assert plain["groups_all_wrong"] == 0 and plain["accuracy"] == 0.25


def test_mixed_prompts_drops_uniform_groups():
    class Fake:
        num_samples = 2
        rewards = torch.tensor([1.0, 0, 1, 1, 0, 0])
        num_prompts = 3

        def grouped(self, v):
            return v.view(3, 2)

    assert mixed_prompts(Fake()).tolist() == [0]


def test_jsonl_prompt_task_field_names(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(10)))
    task = JsonlPromptTask(str(path), prompt_key="question", val_fraction=0.2)
    assert len(task.examples("train")) == 8 and task.examples("val")[0] == {"prompt": "q0", "answer": "#### 0",
                                                                            "response": "#### 0"}
    with pytest.raises(DataError, match="q.jsonl:1: missing key 'prompt'"):
        JsonlPromptTask(str(path))


@pytest.mark.skipif(not os.path.isfile(GSM8K_TEST), reason=f"{GSM8K_TEST} absent (../shared is not part of a clone)")
def test_gsm8k_loads_with_a_config_override(tmp_path):
    from hydra.utils import instantiate

    from tests.helpers import compose_config

    cfg = compose_config(["experiment=nft", "data=prompts_jsonl", f"data.task.train_path={GSM8K_TEST}",
                          "data.task.prompt_key=question"], tmp_path)
    _, tok = tiny_llama()
    dm = instantiate(cfg.data, tokenizer=tok)
    dm.setup("fit")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 1319
    reward = instantiate(cfg.reward)  # data=prompts_jsonl selects the GSM8K reward
    assert isinstance(reward, GSM8KVerifier)
    example = dm.splits["val"][0]
    assert reward(example, example["answer"]).correct and not reward(example, "#### -1").correct


def test_select_and_concat_rollouts_keep_groups_aligned():
    from posttrain.rollouts import concat_rollouts, select_prompts
    model, tok = tiny_llama()
    dm = arithmetic_datamodule(tok)
    batches = iter(dm.train_dataloader())
    reward = ArithmeticVerifier()
    first = collect_rollout(model, next(batches), dm.processor, reward, RolloutSettings(2, max_new_tokens=3),
                            generator=torch.Generator().manual_seed(0))
    longer = collect_rollout(model, next(batches), dm.processor, reward, RolloutSettings(2, max_new_tokens=7),
                             generator=torch.Generator().manual_seed(1))
    longer.rewards = torch.tensor([1.0, 0, 1, 1, 0, 1, 0, 0])  # prompts 0 and 2 mixed
    picked = select_prompts(longer, torch.tensor([2, 0]))
    assert picked.num_prompts == 2 and picked.rewards.tolist() == [0.0, 1, 1, 0]
    assert torch.equal(picked.input_ids[:2], longer.input_ids[4:6])
    merged = concat_rollouts([first, picked], tok.pad_token_id)
    assert merged.num_prompts == 6 and merged.batch_prompts == 4 and merged.generation_batches == 2
    assert merged.input_ids.shape[1] == merged.old_logps.shape[1] + 1 == max(first.input_ids.shape[1],
                                                                               longer.input_ids.shape[1])
    # every row keeps its tokens, log-probs and mask; padding carries no response token
    for source, rows in ((first, slice(0, 8)), (picked, slice(8, 12))):
        width = source.input_ids.shape[1]
        assert torch.equal(merged.input_ids[rows, :width], source.input_ids)
        assert torch.equal(merged.mask[rows, : width - 1], source.mask)
        assert torch.equal(merged.old_logps[rows, : width - 1], source.old_logps)
        assert not merged.mask[rows, width - 1:].any() and not merged.attention_mask[rows, width:].any()
    # statistics describe the step's own batch only (the added groups are all mixed by construction)
    assert group_statistics(merged)["reward_mean"] == first.rewards.mean()


def test_eval_splits_choose_the_validation_splits():
    """A warm-up trained to a target validates on the task's dev split alone, never on val or test_ood."""
    _, tok = tiny_llama()
    task = ArithmeticTask(digits=[1, 2], ood_digits=[2, 3], train_size=40, val_size=8, test_ood_size=8, dev_size=6)
    dm = PromptDataModule(tok, task, batch_size=4, max_length=64, eval_splits=["dev"])
    dm.setup("fit")
    loaders = dm.val_dataloader()
    assert dm.eval_splits == ("dev",) and len(loaders) == 1
    assert [e["prompt"] for b in loaders[0] for e in b["examples"]] == [e["prompt"] for e in task.examples("dev")]
    assert arithmetic_datamodule(tok).eval_splits == ("val", "test_ood")  # the task's own by default
