"""Every experiment composes and trains; bad configuration stops with an error that names the key."""
import pytest
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate

from posttrain.run import train
from tests.helpers import compose_config, experiments


# Overrides that make one experiment's main stage a single epoch (default: trainer.max_epochs=1).
# Online methods learn nothing from an untrained model under a real verifier (every group all wrong), so their
# run uses a coin-flip verifier that gives mixed groups (and lets truncated answers count).
ONLINE = ["trainer.max_epochs=1", "data.verifier._target_=tests.helpers.CoinFlipVerifier",
          "method.truncated_is_wrong=false"]
# PPO runs train their reward model first (reward_model stage, from the initial model here): one tiny epoch.
PPO = ["trainer.max_epochs=1", "method.ppo.epochs=1", "reward_model.max_epochs=1", "reward_model.data.train_size=8",
       "reward_model.data.eval_size=8"]
ONE_EPOCH = {"spin": ["method.num_iterations=1", "method.epochs_per_iteration=1"],
             "rft": ONLINE, "grpo": ONLINE, "nft": ONLINE, "pairwise_rl": PPO, "bt_ppo": PPO,
             # one solve batch: one solve update and one reward-period update on its 4 recycled examples
             "spark": [*ONLINE, "trainer.limit_train_batches=1", "method.reward_batch_size=4"],
             "distillspec": ["trainer.max_epochs=1", "teacher.max_epochs=1", "method.speculative.num_prompts=2",
                             "method.speculative.repeats=1", "method.speculative.max_new_tokens=4"]}
# Metrics each experiment's evaluation must report (default: generation accuracy and reference NLL).
PAIR_METRICS = {f"{split}/{name}" for split in ("val", "test_ood")
                for name in ("pair_accuracy", "pair_accuracy_one_order", "ece", "brier", "position_consistency")}
EVAL_KEYS = {"pairwise_rm": PAIR_METRICS, "bt_rm": PAIR_METRICS | {"val/reward_tau_within", "val/reward_tau_across"}}


@pytest.mark.parametrize("experiment", experiments())
def test_experiment_runs_two_steps_and_changes_every_parameter(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "debug=tiny", "warmup=null", "control=null",
                          *ONE_EPOCH.get(experiment, ["trainer.max_epochs=1"])], tmp_path)
    initial, _ = instantiate(cfg.model)
    result = train(cfg)
    assert result["trainer"].global_step == 2
    model = result["module"].model
    lm = getattr(model, "backbone", model)  # a reward model's value head wraps the LM
    trained = dict(lm.named_parameters())
    unchanged = [n for n, p in initial.named_parameters() if trained[n].requires_grad and torch.equal(p, trained[n].detach())]
    unchanged += [n for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad
                  and not p.detach().any()]  # the value head starts at 0
    assert not unchanged, f"parameters that did not change: {unchanged}"
    expected = EVAL_KEYS.get(experiment, {"val/accuracy", "test_ood/accuracy", "val/nll"})
    assert expected <= set(result["module"].eval_history[-1])


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.beta=-0.1", "method.beta"),
        ("method.loss_type=ipo", "method.loss_type"),
        ("method.optimizer.name=adagrad", "method.optimizer.name"),
        ("method.optimizer.lr=-1", "method.optimizer.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.task.operations=[/]", "data.task.operations"),
        ("trainer.max_epochs=3", "trainer.max_epochs"),
    ],
)
def test_bad_value_names_the_key(override, key, tmp_path):
    cfg = compose_config(["experiment=spin", "debug=tiny", "warmup=null", "control=null", override], tmp_path)
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        train(cfg)


def test_unknown_experiment_names_the_group(tmp_path):
    with pytest.raises(HydraException, match="experiment"):
        compose_config(["experiment=does_not_exist"], tmp_path)


def test_pairwise_ppo_judge_prompt_follows_the_reward_model_stage(tmp_path):
    cfg = compose_config(["experiment=pairwise_rl", "reward_model.method.template='{prompt}#{a}#{b}>'",
                          "reward_model.method.verdicts=[Y,N]"], tmp_path)
    assert cfg.method.judge.template == "{prompt}#{a}#{b}>" and list(cfg.method.judge.verdicts) == ["Y", "N"]
