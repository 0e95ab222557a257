"""Every experiment composes and trains; bad configuration stops with an error that names the key."""
import pytest
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate

from posttrain.models.value_head import ValueModel
from posttrain.run import train
from tests.helpers import compose_config, experiments


# Overrides that make one experiment's main stage a single epoch (default: trainer.max_epochs=1).
# Online methods learn nothing from an untrained model under a real verifier (every group all wrong), so their
# run uses a coin-flip reward that gives mixed groups (and lets truncated answers count).
ONLINE = ["trainer.max_epochs=1", "reward._target_=tests.helpers.CoinFlipVerifier",
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
EVAL_KEYS = {"pairwise_rm": PAIR_METRICS, "bt_rm": PAIR_METRICS | {"val/reward_tau_within", "val/reward_tau_across"},
             "dpo": PAIR_METRICS | {"val/accuracy", "test_ood/accuracy", "val/rewards/margins", "val/logps/accuracies"}}


# Parameters a method leaves untrained on purpose (names as in `module.named_parameters()`); every other parameter it
# is given must change in two steps, so a method that wrongly freezes one fails here.
FROZEN = {
    # the value head reads hidden states, so the (untied) lm-head is unused; L_BT sees only r_w − r_l, not the bias
    "bt_rm": {"model.backbone.lm_head.weight", "model.head.bias"},
    # the critic is a value model on a copy of the reward model: its (untied) lm-head is unused
    "pairwise_rl": {"critic.backbone.lm_head.weight"},
    "bt_ppo": {"critic.backbone.lm_head.weight"},
}


def start_values(module, initial, reward_model) -> dict:
    """The starting value of every parameter the method was given to train, by its name in the module: the policy or
    reward model from the initial model (under its value head's `backbone.` if it has one), a PPO critic from the
    reward model it copies (critic_init: reward_model), every value head at zero."""
    starts = {}
    for attr, source in (("model", initial), ("critic", reward_model)):
        network = getattr(module, attr, None)
        if network is None:
            continue
        source = getattr(source, "backbone", source)
        if isinstance(network, ValueModel):
            starts.update({f"{attr}.backbone.{n}": p for n, p in source.named_parameters()})
            starts.update({f"{attr}.head.{n}": torch.zeros_like(p) for n, p in network.head.named_parameters()})
        else:
            starts.update({f"{attr}.{n}": p for n, p in source.named_parameters()})
    return starts


@pytest.mark.parametrize("experiment", experiments())
def test_experiment_runs_two_steps_and_changes_every_parameter(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "debug=tiny", "warmup=null", "control=null",
                          *ONE_EPOCH.get(experiment, ["trainer.max_epochs=1"])], tmp_path)
    initial, _ = instantiate(cfg.model)
    result = train(cfg)
    assert result["trainer"].global_step == 2
    module, frozen = result["module"], FROZEN.get(experiment, set())
    trained = dict(module.named_parameters())
    starts = start_values(module, initial, result["reward_model"])
    assert frozen <= set(starts), f"allow-listed parameters that do not exist: {frozen - set(starts)}"
    assert not [n for n in frozen if trained[n].requires_grad], "an allow-listed parameter is trained: drop it"
    unchanged = [n for n, p in starts.items() if n not in frozen and torch.equal(p, trained[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    expected = EVAL_KEYS.get(experiment, {"val/accuracy", "test_ood/accuracy", "val/nll"})
    assert expected <= set(result["module"].eval_history[-1])


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.beta=-0.1", "method.beta"),
        ("method.loss_type=ipo", "method.loss_type"),
        ("method.optimizer._target_=torch.optim.Adagradd", "method.optimizer"),
        ("+method.optimizer.lrr=1", "method.optimizer.lrr"),
        ("method.optimizer.lr=-1", "method.optimizer.lr"),
        ("method.scheduler.decay=step", "method.scheduler.decay"),
        ("+method.generation.top_kk=5", "method.generation.top_kk"),
        ("+method.evaluator.sampled_kk=2", "method.evaluator"),
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
