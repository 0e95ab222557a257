import lightning as L
import pytest
import torch

from datamodules.preference import PreferenceDataModule
from datamodules.tasks import ArithmeticPairTask
from lightning_modules.dpo import DPOModule, stack_pairs
from posttrain.evaluators import GenerationEvaluator
from posttrain.models import tiny_llama
from posttrain.models.forward import IGNORE_INDEX
from posttrain.rewards import ArithmeticVerifier
from posttrain.utils.config import ConfigError

OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.0}


def small_model():
    return tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)


def pair_data(tokenizer, **kwargs):
    task = ArithmeticPairTask(digits=[1, 2], ood_digits=[3, 3], train_size=32, val_size=8, test_ood_size=8, seed=0)
    return PreferenceDataModule(tokenizer, task=task, batch_size=4, eval_batch_size=8, max_length=32, **kwargs)


def fit(module, data, tmp_path, steps=2, **kwargs):
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=-1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=1,
                        val_check_interval=steps, check_val_every_n_epoch=None, **kwargs)
    trainer.fit(module, datamodule=data)
    return trainer


def test_stack_pairs_pads_both_sides_to_one_width():
    batch = {"chosen_input_ids": torch.tensor([[1, 2, 3]]), "chosen_attention_mask": torch.tensor([[1, 1, 1]]),
             "chosen_labels": torch.tensor([[IGNORE_INDEX, 2, 3]]),
             "rejected_input_ids": torch.tensor([[1, 5]]), "rejected_attention_mask": torch.tensor([[1, 1]]),
             "rejected_labels": torch.tensor([[IGNORE_INDEX, 5]])}
    rows = stack_pairs(batch, pad_id=0)
    assert rows["input_ids"].tolist() == [[1, 2, 3], [1, 5, 0]]
    assert rows["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert rows["labels"].tolist() == [[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 5, IGNORE_INDEX]]


def test_two_steps_train_the_policy_not_the_reference_and_log_the_metrics(tmp_path):
    model, tokenizer = small_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = DPOModule(model, tokenizer, beta=0.5, optimizer=OPTIMIZER,
                       scheduler={"_target_": "posttrain.optim.warmup_schedule", "decay": "constant"})
    trainer = fit(module, pair_data(tokenizer), tmp_path, num_sanity_val_steps=0)
    assert trainer.global_step == 2
    policy, reference = dict(module.model.named_parameters()), dict(module.reference.named_parameters())
    assert all(not torch.equal(start[n], policy[n]) for n in start), "every policy parameter changes"
    assert all(torch.equal(start[n], reference[n]) for n in start), "π_ref stays the start model"
    assert not any(p.requires_grad for p in module.reference.parameters())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.model.parameters()}
    # the last step's metrics: after one update the policy has left π_ref, so the rewards are not all zero
    logged = trainer.callback_metrics
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected"):
        assert f"train/{name}" in logged, name
    margin = logged["train/rewards/chosen"] - logged["train/rewards/rejected"]
    torch.testing.assert_close(logged["train/rewards/margins"], margin)
    assert logged["train/rewards/margins"].abs() > 0


def test_the_reference_is_left_out_of_checkpoints_and_put_back_on_load(tmp_path):
    model, tokenizer = small_model()
    module = DPOModule(model, tokenizer, optimizer=OPTIMIZER)
    trainer = fit(module, pair_data(tokenizer), tmp_path, num_sanity_val_steps=0)
    path = tmp_path / "dpo.ckpt"
    trainer.save_checkpoint(path)
    weights = torch.load(path, weights_only=False)["state_dict"]
    assert not [k for k in weights if k.startswith("reference.")]
    assert any(k.startswith("model.") for k in weights)
    fresh_model, _ = small_model()  # a resumed run builds the module from the same start
    resumed = DPOModule(fresh_model, tokenizer, optimizer=OPTIMIZER)
    checkpoint = torch.load(path, weights_only=False)
    resumed.on_load_checkpoint(checkpoint)  # what Lightning calls before loading the weights (strictly)
    resumed.load_state_dict(checkpoint["state_dict"])
    for (name, p), q in zip(resumed.model.named_parameters(), module.model.parameters()):
        assert torch.equal(p, q), name
    for p, q in zip(resumed.reference.parameters(), module.reference.parameters()):
        assert torch.equal(p, q)


def test_evaluation_scores_pairs_by_implicit_reward_and_answers_by_generation(tmp_path):
    model, tokenizer = small_model()
    module = DPOModule(model, tokenizer, beta=0.5, optimizer=OPTIMIZER,
                       evaluator=GenerationEvaluator(reward=ArithmeticVerifier(), max_new_tokens=4))
    fit(module, pair_data(tokenizer), tmp_path, num_sanity_val_steps=-1)
    start, end = module.eval_history
    assert start["epoch"] == -1 and end["step"] == 2
    for split in ("val", "test_ood"):
        for name in ("pair_accuracy", "ece", "rewards/chosen", "rewards/rejected", "rewards/margins",
                     "logps/accuracies", "accuracy"):
            assert f"{split}/{name}" in end, f"{split}/{name}"
    # at the start π_θ = π_ref: every implicit reward is 0, so every pair is a tie (not counted right)
    assert start["val/rewards/margins"] == 0.0 and start["val/pair_accuracy"] == 0.0
    assert end["val/rewards/margins"] == pytest.approx(end["val/rewards/chosen"] - end["val/rewards/rejected"],
                                                       abs=1e-6)


def test_reference_free_has_no_reference_and_rewards_the_policy_likelihood(tmp_path):
    model, tokenizer = small_model()
    module = DPOModule(model, tokenizer, beta=0.5, reference_free=True, optimizer=OPTIMIZER)
    assert module.reference is None
    trainer = fit(module, pair_data(tokenizer), tmp_path, num_sanity_val_steps=0)
    logged = trainer.callback_metrics
    torch.testing.assert_close(logged["train/rewards/chosen"], 0.5 * logged["train/logps/chosen"])


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_other_losses_train(loss_type, tmp_path):
    model, tokenizer = small_model()
    start = [p.detach().clone() for p in model.parameters()]
    module = DPOModule(model, tokenizer, loss_type=loss_type, optimizer=OPTIMIZER)
    fit(module, pair_data(tokenizer), tmp_path, num_sanity_val_steps=0)
    assert all(not torch.equal(p, q) for p, q in zip(start, module.model.parameters()))


@pytest.mark.parametrize("kwargs, key", [
    ({"beta": 0.0}, "method.beta"),
    ({"loss_type": "kto"}, "method.loss_type"),
    ({"label_smoothing": 0.5}, "method.label_smoothing"),
    ({"loss_type": "ipo", "label_smoothing": 0.1}, "method.label_smoothing"),
])
def test_bad_settings_name_the_key(kwargs, key):
    model, tokenizer = small_model()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DPOModule(model, tokenizer, **kwargs)
