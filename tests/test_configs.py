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
ONE_EPOCH = {"spin": ["method.num_iterations=1", "method.epochs_per_iteration=1"],
             "rft": ONLINE, "grpo": ONLINE, "nft": ONLINE,
             # one solve batch: one solve update and one reward-period update on its 4 recycled examples
             "spark": [*ONLINE, "trainer.limit_train_batches=1", "method.reward_batch_size=4"],
             "distillspec": ["trainer.max_epochs=1", "teacher.max_epochs=1", "method.speculative.num_prompts=2",
                             "method.speculative.repeats=1", "method.speculative.max_new_tokens=4"]}


@pytest.mark.parametrize("experiment", experiments())
def test_experiment_runs_two_steps_and_changes_every_parameter(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "debug=tiny", "warmup=null", "control=null",
                          *ONE_EPOCH.get(experiment, ["trainer.max_epochs=1"])], tmp_path)
    initial, _ = instantiate(cfg.model)
    result = train(cfg)
    assert result["trainer"].global_step == 2
    trained = dict(result["module"].model.named_parameters())
    unchanged = [n for n, p in initial.named_parameters() if p.requires_grad and torch.equal(p, trained[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    assert {"val/accuracy", "test_ood/accuracy", "val/nll"} <= set(result["module"].eval_history[-1])


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
