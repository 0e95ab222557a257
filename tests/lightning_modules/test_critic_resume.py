"""Critic GRPO (experiment=llava_critic_r1's main stage) killed mid-run resumes from last.ckpt to the same end: the
same weights and the same final evaluation, self-critique judged by the same start model included."""
import pytest
import torch

from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config

# 2 epochs x 2 rollout steps on 8 critic items; a coin-flip reward gives the random model mixed groups
BASE = ["experiment=llava_critic_r1", "debug=tiny", "stages.warmup=null", "stages.critic_sft=null",
        "stages.policy_grpo=null", "reward._target_=tests.helpers.CoinFlipVerifier", "~reward.alpha",
        "method.truncated_is_wrong=false", "trainer.max_epochs=2", "model.hidden_size=64", "model.num_heads=2",
        "model.num_layers=1", "model.intermediate_size=128", "method.generation.max_new_tokens=8",
        "method.evaluator.self_critique_questions=2", "method.evaluator.self_critique_n=[1,2,4]",
        "data.eval_size=4", "method.optimizer.lr=1e-3"]


def test_killed_critic_grpo_run_resumes_to_the_same_result(tmp_path):
    reference = train(compose_config(BASE, tmp_path / "uninterrupted"))
    assert reference["trainer"].global_step == 4

    killed_cfg = compose_config([*BASE, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=3"],
                                tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 2 and state["epoch"] == 0  # after the first epoch, before the kill
    assert not any(k.startswith("evaluator.") for k in state["state_dict"])  # the start judge is rebuilt, not saved

    resumed = train(compose_config([*BASE, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == 4
    assert_same_parameters(resumed["module"].model, reference["module"].model)
    assert resumed["rows"] == reference["rows"]
    assert {"qa/selfcritique@4", "qa/basecritique@4", "val/critic_accuracy"} <= set(resumed["rows"][-1])
