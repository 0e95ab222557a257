"""SPARK: the reward period trains on recycled examples and logs per kind; recycle=false is policy-only GRPO; the
self-judging evaluation fills the results rows; a killed run resumes, cache included, to the same numbers."""
import math
import random
from types import SimpleNamespace

import pytest
import torch

from lightning_modules.spark import SparkModule, judge_summary, recyclable
from posttrain.models import tiny_llama
from posttrain.pipeline import train
from posttrain.rewards import ArithmeticVerifier, Verdict
from posttrain.rewards.recycling import NO, PAIRWISE, POINTWISE, REFLECT, RecycledReward, recycle
from tests.helpers import Killed, assert_same_parameters, compose_config

SMALL = ["experiment=spark", "debug=tiny", "stages.warmup=null", "stages.control=null", "model.hidden_size=32",
         "model.num_heads=2",
         "model.num_layers=1", "model.intermediate_size=64", "reward._target_=tests.helpers.CoinFlipVerifier",
         "method.truncated_is_wrong=false", "method.prompts_per_minibatch=2", "method.evaluator.sampled_k=2",
         "method.generation.max_new_tokens=4", "method.evaluator.max_new_tokens=4", "method.judge_eval.size=4",
         "method.judge_eval.samples=2", "method.judge_eval.rounds=2", "method.optimizer.lr=1e-3"]
JUDGE_KEYS = {"val/judge_balanced_accuracy", "val/judge_ece", "val/judge_yes_rate", "val/pair_accuracy",
              "val/pair_order_agreement", "val/repair_rate", "val/tts_round_0", "val/tts_round_2", "val/tts_gain",
              "val/judge_ref_balanced_accuracy", "val/judge_ref_ece"}


def test_reward_period_updates_on_recycled_examples(tmp_path):
    out = train(compose_config([*SMALL, "trainer.max_epochs=1", "method.reward_batch_size=4"], tmp_path))
    metrics = out["trainer"].logged_metrics
    # batch of 4 prompts: ≤ 2 judge + ≤ 2 reflection examples per batch, a reward period of 4 after each batch;
    # 2 solve updates + 2 reward updates (2 prompts per mini-batch) per batch, 2 batches
    assert out["trainer"].global_step == 8
    assert float(metrics["reward/updates"]) == 2 and float(metrics["train/updates"]) == 2
    assert float(metrics["recycle/reflect_examples"]) == 2 and float(metrics["recycle/cache_size"]) == 0
    assert {"reward/reward_mean", "reward/groups_zero_advantage", "reward/loss/policy", "reward/loss/kl",
            "train/loss/kl", "train/reward_mean"} <= set(metrics)
    history = out["module"].eval_history
    assert history[0]["epoch"] == -1 and JUDGE_KEYS <= set(history[0]) and JUDGE_KEYS <= set(history[-1])
    # balanced accuracy is NaN when the judged answers are all of one class
    assert all(0 <= history[-1][k] <= 1 or math.isnan(history[-1][k]) for k in JUDGE_KEYS - {"val/tts_gain"})
    # the start model judges its own answers = the reference's answers (same model, same noise)
    for name in ("balanced_accuracy", "ece", "yes_rate", "answers_correct"):
        own, ref = history[0][f"val/judge_{name}"], history[0][f"val/judge_ref_{name}"]
        assert own == ref or (math.isnan(own) and math.isnan(ref))


def test_without_recycling_it_is_policy_only_grpo(tmp_path):
    out = train(compose_config([*SMALL, "trainer.max_epochs=1", "method.recycle=false"], tmp_path))
    assert out["trainer"].global_step == 4  # 2 solve updates per batch, nothing else
    assert not any(k.startswith(("reward/", "recycle/")) for k in out["trainer"].logged_metrics)
    assert out["module"].cache == [] and JUDGE_KEYS <= set(out["module"].eval_history[-1])


def test_bad_spark_settings_name_the_key(tmp_path):
    for override, key in (("method.judge_eval.rounds=-1", "method.judge_eval.rounds"),
                          ("method.reward_batch_size=0", "method.reward_batch_size"),
                          ("method.judge_fraction=2", "method.judge_fraction"),
                          ("+method.judge_eval.bogus=1", "method.judge_eval"),
                          ("method.judge_eval.split=test", "method.judge_eval.split"),
                          # batch 4, fractions 0.5: at most (1 + 1) * (2 + 2) = 8 cached examples
                          ("method.reward_batch_size=9", "method.reward_batch_size"),
                          ("method.judge_fraction=0 method.reflect_fraction=0", "method.reward_batch_size"),
                          ("reward._target_=posttrain.rewards.GSM8KVerifier", "method.reward")):
        with pytest.raises(Exception, match=key.replace(".", r"\.")):
            train(compose_config([*SMALL, *override.split()], tmp_path))


@pytest.mark.slow
def test_killed_spark_run_resumes_to_the_same_result(tmp_path):
    # reward periods of 6 with ≤ 4 new examples per batch: the cache holds examples across the epoch boundary, so
    # the resumed run needs the checkpointed cache to make the same reward period
    base = [*SMALL, "trainer.max_epochs=2", "method.reward_batch_size=6"]
    reference = train(compose_config(base, tmp_path / "uninterrupted"))
    steps = reference["trainer"].global_step
    killed = compose_config([*base, "+callbacks.kill._target_=tests.helpers.KillAtStep",
                             f"+callbacks.kill.step={steps // 2 + 1}"], tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["epoch"] == 0 and state["posttrain"]["cache"] and state["posttrain"]["batches_seen"] == 2

    resumed = train(compose_config([*base, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == steps
    assert_same_parameters(resumed["module"].model, reference["module"].model)
    assert resumed["module"].eval_history == reference["module"].eval_history
    assert resumed["module"].cache == reference["module"].cache


def tiny_module(**kwargs) -> SparkModule:
    model, tokenizer = tiny_llama(hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64, seed=1)
    return SparkModule(model, tokenizer, ArithmeticVerifier(), kl_coef=0.0, **kwargs)


class StubJudge:
    """P(Y) per answer text; P(A) = 0.7 when the truth "2" is in slot A, else 0.6 (A wins in both orders)."""

    def p_correct(self, questions, answers):
        return torch.tensor([{"2": 0.9, "3": 0.6, "5": 0.2}[a] for a in answers])

    def p_first(self, questions, first, second):
        return torch.tensor([0.7 if a == "2" else 0.6 for a in first])


def test_judge_evaluation_by_hand():
    module = tiny_module()
    questions, examples = ["1+1=", "2+2="], [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    owners, answers = [0, 0, 1, 1], ["2", "3", "5", "x"]
    verdicts = [Verdict(True, True), Verdict(False, True), Verdict(False, True), Verdict(False, False)]
    wrong = module.judge_answers(StubJudge(), "", questions, examples, owners, answers, verdicts)
    assert wrong == [1, 2]  # "x" is unparsed: neither judged nor counted wrong
    module.judge_update("tts_round_0", [1.0, 0.0, 0.0, 0.0])
    module.judge_update("tts_round_2", [1.0, 1.0, 0.0, 1.0])
    values = module.gather_judge_values()
    assert set(values) == {"p_yes", "yes_label", "pair_correct", "pair_order_agreement", "tts_round_0",
                           "tts_round_2"}
    results = judge_summary(values)
    # P(Y) = .9 / .6 / .2 on labels 1 / 0 / 0: recalls 1 and 1/2; ECE = (|1-.9| + |0-.6| + |0-.2|) / 3
    expected = {"judge_balanced_accuracy": 0.75, "judge_ece": 0.3, "judge_yes_rate": 2 / 3,
                "judge_answers_correct": 1 / 3,
                # one pair ("2" vs "3"): the truth wins in slot A, loses in slot B; different answers win
                "pair_accuracy": 0.5, "pair_order_agreement": 0.0,
                "tts_round_0": 0.25, "tts_round_2": 0.75, "tts_gain": 0.5}
    assert set(results) == set(expected)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key
    assert module.gather_judge_values() == {}  # reset, and an empty metric is absent


def test_stale_cache_entries_are_dropped_and_counted():
    module = tiny_module(max_staleness=1)
    module.batches_seen = 1
    assert module.add_to_cache([{"id": "a"}, {"id": "b"}]) == 0
    module.batches_seen = 2
    assert module.add_to_cache([{"id": "c"}]) == 0  # a, b are one batch old: kept
    module.batches_seen = 3
    assert module.add_to_cache([]) == 2  # a, b are two batches old
    assert [(e["id"], e["born"]) for e in module.cache] == [("c", 2)]
    assert module.recycle_metrics([], 2)["dropped_stale"] == 2.0


def test_reward_period_rewards_follow_each_kinds_label():
    examples = recycle([{"prompt": "7+5=", "answer": "12"}], ["12", "13", "12", "11"], [1.0, 0.0, 1.0, 0.0],
                       [True] * 4, 4, random.Random(0), pairwise_prob=1.0)
    examples = {e["kind"]: e for e in examples}
    assert set(examples) == {PAIRWISE, REFLECT}
    examples[POINTWISE] = recycle([{"prompt": "1+1=", "answer": "2"}], ["3"] * 4, [0.0] * 4, [True] * 4, 4,
                                  random.Random(0))[0]
    reward, other = RecycledReward(ArithmeticVerifier()), {"A": "B", "B": "A", "Y": "N", "N": "Y", "12": "13"}
    order = [POINTWISE, PAIRWISE, REFLECT]
    label = {kind: examples[kind]["answer"] for kind in order}
    assert label[POINTWISE] == "N" and label[REFLECT] == "12"
    # two samples per example: its label and a wrong answer of the same kind, then the label twice for reflection
    completions = {POINTWISE: [label[POINTWISE], other[label[POINTWISE]]],
                   PAIRWISE: [label[PAIRWISE], other[label[PAIRWISE]]], REFLECT: ["12", " 12\n"]}
    rewards = torch.tensor([reward(examples[kind], c).reward for kind in order for c in completions[kind]])
    assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    rollout = SimpleNamespace(rewards=rewards, grouped=lambda values: values.view(3, 2))
    metrics = tiny_module().reward_metrics([examples[kind] for kind in order], rollout)
    assert {k: float(v) for k, v in metrics.items()} == pytest.approx(
        {"groups_zero_advantage": 1 / 3, "reward_pointwise": 0.5, "reward_pairwise": 0.5, "reward_reflect": 1.0})


def test_truncated_rollouts_are_not_recycled_when_truncation_zeroes_the_reward():
    # "3" is correct but was cut before eos, so truncated_is_wrong gave it reward 0
    rollout = SimpleNamespace(parsed=torch.tensor([True, True, True, True]),
                              finished=torch.tensor([False, True, True, True]))
    usable = recyclable(rollout, 4, truncated_is_wrong=True)
    assert usable == [False, True, True, True]
    assert recyclable(rollout, 4, truncated_is_wrong=False) == [True] * 4
    out = recycle([{"prompt": "1+2=", "answer": "3"}], ["3", "4", "5", "4"], [0.0, 0.0, 0.0, 0.0], usable, 4,
                  random.Random(0), pairwise_prob=1.0)
    assert all("3" not in e["prompt"].split("=", 1)[1] for e in out)  # no "3 is wrong" example of any kind
    assert [e["answer"] for e in out if e["kind"] == POINTWISE] == [NO]


def gather_on_two_processes(rank: int, port: int, out: dict) -> None:
    import datetime

    import torch.distributed as dist

    # a collective that one process never joins fails after the timeout instead of hanging the test run
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    module = tiny_module()
    if rank == 0:  # the processes update different sets of metrics
        module.judge_update("p_yes", [0.9, 0.2])
        module.judge_update("yes_label", [1.0, 0.0])
    else:
        module.judge_update("p_yes", [0.7])
        module.judge_update("yes_label", [0.0])
        module.judge_update("tts_round_0", [1.0])
    out[rank] = {k: v.tolist() for k, v in module.gather_judge_values().items()}
    dist.destroy_process_group()


def test_judge_metrics_gather_on_every_process_with_different_updated_sets():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(gather_on_two_processes, args=(port, out), nprocs=2, join=True)
        results = dict(out)
    expected = {"p_yes": pytest.approx([0.9, 0.2, 0.7]), "yes_label": [1.0, 0.0, 0.0], "tts_round_0": [1.0]}
    assert results[0] == expected and results[1] == expected
