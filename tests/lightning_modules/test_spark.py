"""SPARK: the reward period trains on recycled examples and logs per kind; recycle=false is policy-only GRPO; the
self-judging evaluation fills the results rows; a killed run resumes, cache included, to the same numbers."""
import math

import pytest
import torch

from posttrain.run import train
from tests.helpers import Killed, compose_config

SMALL = ["experiment=spark", "debug=tiny", "warmup=null", "control=null", "model.hidden_size=32", "model.num_heads=2",
         "model.num_layers=1", "model.intermediate_size=64", "data.verifier._target_=tests.helpers.CoinFlipVerifier",
         "method.truncated_is_wrong=false", "method.prompts_per_minibatch=2", "method.evaluation.sampled_k=2",
         "method.generation.max_new_tokens=4", "method.evaluation.max_new_tokens=4", "method.judge_eval.size=4",
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
                          ("data.verifier._target_=posttrain.rewards.GSM8KVerifier", "data.verifier")):
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
    final = dict(reference["module"].model.named_parameters())
    for name, param in resumed["module"].model.named_parameters():
        torch.testing.assert_close(param, final[name], rtol=0, atol=1e-6, msg=name)
    assert resumed["module"].eval_history == reference["module"].eval_history
    assert resumed["module"].cache == reference["module"].cache
