"""Online methods (RFT, GRPO, NFT): dynamic sampling fills the batch with mixed groups, sampled accuracy is logged
next to greedy accuracy, and a killed NFT run resumes to the same weights as an uninterrupted one."""
import pytest
import torch

from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config

SMALL = ["debug=tiny", "stages.warmup=null", "model.hidden_size=32", "model.num_heads=2",
         "model.num_layers=1", "model.intermediate_size=64", "reward._target_=tests.helpers.CoinFlipVerifier",
         "method.truncated_is_wrong=false", "method.prompts_per_minibatch=2", "method.evaluator.sampled_k=2",
         "method.generation.max_new_tokens=4", "method.evaluator.max_new_tokens=4"]


@pytest.mark.parametrize("method", ["rft", "grpo", "nft"])
def test_dynamic_sampling_fills_the_batch_with_mixed_groups(method, tmp_path):
    out = train(compose_config([f"experiment={method}", *SMALL, "trainer.max_epochs=1",
                                "method.max_generation_batches=10", "method.num_samples=2"], tmp_path))
    metrics = out["trainer"].logged_metrics
    history = out["module"].eval_history
    # with K = 2 the coin-flip verifier leaves half of the groups uniform; the refill tops the batch up to 4 mixed
    # prompts (2 updates of 2 prompts) from further batches
    assert float(metrics["train/updates"]) == 2 and float(metrics["train/groups_kept"]) == 1
    assert float(metrics["train/generation_batches"]) > 1
    assert history[0]["epoch"] == -1 and "val/accuracy_sampled" in history[0] and len(history) == 2
    assert all(0 <= h["val/accuracy_sampled"] <= 1 for h in history)


def test_sampled_accuracy_uses_fixed_noise(tmp_path):
    """Two evaluations of the same model draw the same samples, so a change between evaluations is the model's."""
    cfg = compose_config(["experiment=nft", *SMALL, "trainer.max_epochs=1",
                          "method.optimizer._target_=torch.optim.SGD", "method.optimizer.lr=1e-30"],  # weights stay put
                         tmp_path)
    history = train(cfg)["module"].eval_history
    assert history[0]["val/accuracy_sampled"] == history[1]["val/accuracy_sampled"]


def test_killed_nft_run_resumes_to_the_same_result(tmp_path):
    base = ["experiment=nft", *SMALL, "trainer.max_epochs=2", "method.max_generation_batches=3",
            "method.optimizer.lr=1e-3"]
    reference = train(compose_config(base, tmp_path / "uninterrupted"))
    steps = reference["trainer"].global_step
    assert steps > 0

    killed = compose_config([*base, "+callbacks.kill._target_=tests.helpers.KillAtStep",
                             f"+callbacks.kill.step={steps // 2 + 1}"], tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0  # the end of the first epoch

    resumed = train(compose_config([*base, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == steps
    assert_same_parameters(resumed["module"].model, reference["module"].model)
    assert resumed["module"].eval_history == reference["module"].eval_history
