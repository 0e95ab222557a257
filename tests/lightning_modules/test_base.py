"""The base module is plumbing: its optimizer holds every trainable parameter the method owns (a learned scalar
outside `model` included), frozen copies are out of the optimizer, the gradient and (when rebuildable) the
checkpoint, and stay in eval mode."""
import copy

import lightning as L
import pytest
import torch
from torch import nn

from datamodules.sft import SFTDataModule
from datamodules.tasks import ArithmeticTask
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.models.builders import tiny_llama
from posttrain.models.forward import label_logprobs
from posttrain.utils.config import ConfigError
from tests.helpers import KillAtStep, Killed

TINY = {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "intermediate_size": 64}


class LogZModule(PostTrainModule):
    """SFT plus a learned scalar log Z outside `model` (as a GFlowNet objective has), a frozen reference the run can
    rebuild and a frozen opponent it cannot."""

    def __init__(self, model, tokenizer, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        self.log_z = nn.Parameter(torch.zeros(()))
        self.add_frozen("reference", frozen_copy(model), rebuildable=True)
        self.add_frozen("opponent", nn.Linear(2, 2))

    def training_step(self, batch, batch_idx):
        logps, mask = label_logprobs(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        with torch.no_grad():
            ref, _ = label_logprobs(self.reference, batch["input_ids"], batch["attention_mask"], batch["labels"])
        # (log Z + log π − log π_ref − 1)²: the gradient reaches log Z only through the loss, like a TB objective
        residual = self.log_z + ((logps - ref) * mask).sum(-1) - 1.0  # (B,)
        return residual.pow(2).mean()


def make_module(kind=None, **kwargs):
    model, tokenizer = tiny_llama(**TINY)
    return (kind or LogZModule)(model, tokenizer, optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, **kwargs)


def fit(module, tmp_path, steps=2):
    data = SFTDataModule(module.tokenizer, ArithmeticTask(train_size=16, val_size=4, test_ood_size=4), batch_size=4,
                         eval_batch_size=4, max_length=32)
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    trainer.fit(module, datamodule=data)
    return trainer


def test_optimizer_holds_every_trainable_parameter_and_no_frozen_one(tmp_path):
    module = make_module()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = fit(module, tmp_path)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    names = {id(p): n for n, p in module.named_parameters()}
    assert {names[i] for i in optimized} == {n for n in names.values() if n.startswith(("model.", "log_z"))}
    assert id(module.log_z) in optimized
    assert module.log_z.item() != 0.0  # the scalar outside `model` learned
    for name, param in module.named_parameters():
        frozen = name.startswith(("reference.", "opponent."))
        assert param.requires_grad != frozen, name
        assert torch.equal(param, before[name]) == frozen, name


def test_rebuildable_frozen_copies_stay_out_of_the_checkpoint_and_come_back_on_load(tmp_path):
    module = make_module()
    fit(module, tmp_path)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert "log_z" in state and any(k.startswith("model.") for k in state)
    assert not [k for k in state if k.startswith("reference.")]
    assert {"opponent.weight", "opponent.bias"} <= set(state)  # not rebuildable: kept
    fresh = make_module()
    reference = copy.deepcopy(fresh.reference.state_dict())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: the reference keys were put back from the live module
    torch.testing.assert_close(fresh.log_z, module.log_z)
    for key, value in fresh.reference.state_dict().items():
        assert torch.equal(value, reference[key])


def test_frozen_copies_stay_in_eval_mode():
    module = make_module()
    module.train()
    assert module.model.training and not module.reference.training and not module.opponent.training


class ModeProbe(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        module.modes = (all(m.training for m in module.model.modules()), module.reference.training)


def test_a_policy_loaded_in_eval_mode_trains_in_training_mode(tmp_path):
    """`from_pretrained` returns a model in eval mode; the fit must not keep its dropout off."""
    module = make_module()
    module.model.eval()
    data = SFTDataModule(module.tokenizer, ArithmeticTask(train_size=8, val_size=4, test_ood_size=4), batch_size=4,
                         eval_batch_size=4, max_length=32)
    L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
              enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
              callbacks=[ModeProbe()]).fit(module, datamodule=data)
    assert module.modes == (True, False)


def test_parameter_groups_must_cover_every_trainable_parameter():
    class Partial(LogZModule):
        def parameter_groups(self):
            return [{"params": list(self.model.parameters())}]  # forgets log Z

    model, tokenizer = tiny_llama(**TINY)
    module = Partial(model, tokenizer)
    module.schedule_period = lambda: 10
    with pytest.raises(ConfigError, match=r"parameter_groups: .*log_z"):
        module.configure_optimizers()


class StepLog(LogZModule):
    """Records (epoch, batch_idx, global_step) of every training step."""

    steps: list

    def on_fit_start(self):
        super().on_fit_start()
        self.steps = []

    def training_step(self, batch, batch_idx):
        self.steps.append((self.current_epoch, batch_idx, self.global_step))
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("max_steps", [-1, 100])
def test_resuming_an_epoch_end_checkpoint_continues_as_the_uninterrupted_run(tmp_path, max_steps):
    """Three epochs of two batches; killed in the third, resumed from the second epoch's checkpoint. With
    `trainer.max_steps` set, Lightning on its own trains a batch `(1, 2, 4)` that no epoch has and skips the last
    epoch (5 steps instead of 6); the module marks the checkpoint's epoch finished."""
    def run(folder, callbacks=(), ckpt_path=None):
        module = make_module(StepLog)
        data = SFTDataModule(module.tokenizer, ArithmeticTask(train_size=8, val_size=4, test_ood_size=4),
                             batch_size=4, eval_batch_size=4, max_length=32)
        trainer = L.Trainer(max_steps=max_steps, max_epochs=3, limit_val_batches=0, logger=False,
                            default_root_dir=folder, enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu", callbacks=[L.pytorch.callbacks.ModelCheckpoint(
                                dirpath=folder, save_last=True, every_n_epochs=1), *callbacks])
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, trainer

    uninterrupted, _ = run(tmp_path / "whole")
    assert uninterrupted.steps == [(e, b, 2 * e + b) for e in range(3) for b in range(2)]
    with pytest.raises(Killed):
        run(tmp_path / "killed", callbacks=[KillAtStep(5)])
    resumed, trainer = run(tmp_path / "killed", ckpt_path=tmp_path / "killed" / "last.ckpt")
    assert resumed.steps == uninterrupted.steps[4:]
    assert trainer.global_step == 6
