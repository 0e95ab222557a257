"""experiment=gflowvlm end to end: a killed run resumes to the same result (replay buffer, environment seeds,
weights, evaluations), and the tiny VLM plays the episodes from images."""
import pytest
import torch
from hydra.utils import instantiate
from omegaconf.errors import InterpolationResolutionError

from posttrain.episodes.rollout import answer_tokens
from posttrain.pipeline import train
from posttrain.pipeline.stages import resolved
from posttrain.processors import make_processor
from tests.helpers import Killed, assert_same_parameters, compose_config

# the main stage alone (DB), a small model, episodes of two steps and short answers, cheap evaluations
SMALL = ["experiment=gflowvlm", "debug=tiny", "stages.warmup=null", "stages.var_tb=null", "stages.subtb=null",
         "stages.ppo=null", "env.max_steps=2", "method.num_samples=2", "method.generation.max_new_tokens=8",
         "method.evaluator.num_samples=2", "method.evaluator.diversity_tasks=1", "method.evaluator.tv_samples=2",
         "data.eval_size=2", "method.optimizer.lr=1e-3"]
TINY_LM = ["model.hidden_size=32", "model.num_heads=2", "model.num_layers=1", "model.intermediate_size=64"]


def test_killed_gflowvlm_run_resumes_with_the_same_buffer_and_seeds(tmp_path):
    # 4 tasks, 2 per step, 2 epochs: the second epoch revisits every task, so its updates train on buffers filled in
    # the first one, and its tasks come in an order of its own
    base = [*SMALL, *TINY_LM, "data.train_size=4", "data.batch_size=2", "trainer.max_epochs=2"]
    reference = train(compose_config(base, tmp_path / "uninterrupted"))
    steps = reference["trainer"].global_step
    assert steps == 4

    killed = compose_config([*base, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=3"],
                            tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["epoch"] == 0 and state["posttrain"]["env_steps"] > 0
    assert len(state["posttrain"]["buffer"]["tasks"]) == 4  # every task's buffer, after the first epoch

    resumed = train(compose_config([*base, f"ckpt_path={last}"], tmp_path / "killed"))
    module, ref = resumed["module"], reference["module"]
    assert resumed["trainer"].global_step == steps
    assert module.buffer.state_dict() == ref.buffer.state_dict()  # the same trajectories, task seeds and answers
    assert module.env_steps == ref.env_steps
    assert_same_parameters(module.model, ref.model)
    assert module.eval_history == ref.eval_history


def test_tiny_vlm_plays_numberline_from_images_two_steps(tmp_path):
    out = train(compose_config([*SMALL, "model=vlm_tiny", "model.hidden_size=64", "model.intermediate_size=128",
                                "data.train_size=4", "data.batch_size=2", "trainer.max_epochs=1"], tmp_path))
    module = out["module"]
    assert out["trainer"].global_step == 2 and module.env_steps > 0
    held = [t for trajs in module.buffer.tasks.values() for t in trajs]
    # the policy saw the state only as the image: images in the steps, no state line in the prompts
    policy = [t for t in held if not t.expert]
    assert policy and all(s.image is not None and s.image.shape == (64, 64, 3) for t in policy for s in t.steps)
    assert all("state:" not in s.prompt for t in held for s in t.steps)
    final = module.eval_history[-1]
    assert {"val/success", "test_ood/success", "val/invalid", "val/div@2", "val/tv_terminal",
            "val/tv_final"} <= set(final)
    assert 0 <= final["val/tv_terminal"] <= 1 and 0 <= final["val/tv_final"] <= 1


def test_blackjack_gets_its_own_warmup_length_answer_budget_and_held_out_hands(tmp_path):
    # the warm-up budget, the answer budget and the held-out size follow env.id; NumberLine keeps 8 epochs, 48 tokens
    # and 16 tasks
    numberline = compose_config(["experiment=gflowvlm"], tmp_path)
    blackjack = compose_config(["experiment=gflowvlm", "env=blackjack"], tmp_path)
    assert (numberline.stages.warmup.trainer.max_epochs, numberline.data.eval_size) == (8, 16)
    assert (blackjack.stages.warmup.trainer.max_epochs, blackjack.data.eval_size) == (48, 256)
    assert resolved(blackjack.stages.warmup.data)["eval_size"] == 256  # the start is scored on the same hands
    # every answer the expert teaches fits the generation budget (cut, a stand or [DONE] would be unparsable):
    # Blackjack's longest is {"thoughts": "sum 21 dealer 10", "action": "[DONE]"} and eos
    for cfg, thoughts, actions in ((numberline, ["cur 5 tgt 0"], ["+", "-", "[DONE]"]),
                                   (blackjack, [f"sum {s} dealer {d}" for s in (4, 21) for d in ("A", "10")],
                                    ["stand", "hit", "[DONE]"])):
        processor = make_processor(instantiate(cfg.model)[1], 2048)
        longest = max(len(answer_tokens(processor, t, a)[0]) for t in thoughts for a in actions)
        for stage in ("main", "ppo"):
            method = resolved(cfg.stages[stage].method)
            assert longest <= method["generation"]["max_new_tokens"] == method["evaluator"]["max_new_tokens"]
        assert longest <= resolved(cfg.stages.warmup.method)["evaluator"]["max_new_tokens"]


def test_an_environment_without_per_env_settings_is_an_error_naming_the_key(tmp_path):
    cfg = compose_config(["experiment=gflowvlm", "env.id=cartpole"], tmp_path)
    message = r"per_env\.cartpole: no settings for env.id='cartpole'.*\['blackjack', 'numberline'\]"
    with pytest.raises(InterpolationResolutionError, match=message):
        _ = cfg.data.eval_size
