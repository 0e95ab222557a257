"""EMMA's policy training step on toy demonstrations plus an edited copy: uniform weights during warm-up (and in the
uniform arms), AdaMix weights after it, the weight-mass diagnostics, and a killed run resuming to the same weights
and per-episode loss means."""
from dataclasses import replace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.emma import MixedRobotDataModule
from lightning_modules.emma import EMMAModule
from lightning_modules.emma_transfer import TransferModule
from posttrain.emma import engine
from posttrain.emma.generator import transfer_tiny
from posttrain.envs import registry
from posttrain.envs.demos import read_demos
from posttrain.vla.evaluator import ClosedLoopEvaluator
from tests.helpers import KillAtStep, Killed, assert_same_parameters
from tests.models.test_vla import small_vla
from tests.vla_fixtures import ToyReachEnv, write_demos


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    monkeypatch.setitem(registry.ENVS, "toy_reach", ToyReachEnv)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("emma")
    real = write_demos(root / "real", episodes=2)
    episodes = read_demos(real).episodes
    edits = [replace(e, scene=255 - e.scene) for e in episodes]  # a stand-in edit: inverted colours
    engine.write_edited(edits, [0, 1], engine.edit_appearances("in_domain", 2, 0), "oracle", str(root / "edited"))
    return real, str(root / "edited")


def make(folders, **method):
    model, processor = small_vla()
    data = MixedRobotDataModule(processor, path=folders[0], edited_path=folders[1], chunk=3, batch_size=4,
                                spatial_prompt="none", episode_splits=["val"], eval_episodes=1, eval_batch_size=1)
    evaluator = ClosedLoopEvaluator({"id": "toy_reach", "max_steps": 4}, max_steps=4, media_every=1)
    module = EMMAModule(model, processor, vlm_lr=1e-3, action_lr=1e-3, evaluator=evaluator, **method)
    return module, data


def fit(module, data, directory, steps=4, callbacks=(), ckpt_path=None):
    """`steps` training steps (even)."""
    # epochs of 2 steps, checkpointed at each epoch's end (the data order is a function of (seed, epoch))
    trainer = L.Trainer(max_epochs=steps // 2, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ModelCheckpoint(dirpath=directory, save_last=True), *callbacks])
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


class Recorder(L.Callback):
    def __init__(self):
        self.logged = []

    def on_train_batch_end(self, trainer, module, *args):
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def test_adamix_turns_on_after_the_warmup_and_reports_where_the_weight_goes(folders, tmp_path):
    module, data = make(folders, warmup_steps=2)
    recorder = Recorder()
    fit(module, data, tmp_path, steps=4, callbacks=[recorder])
    assert [r["train/active"] for r in recorder.logged] == [0.0, 0.0, 1.0, 1.0]
    for r in recorder.logged[:2]:  # uniform: the mass is the share
        assert r["train/weight_max"] == r["train/weight_min"] == 1.0
        assert r["train/mass_generated"] == pytest.approx(r["train/share_generated"])
    assert any(r["train/weight_max"] > 1.0 > r["train/weight_min"] for r in recorder.logged[2:])
    assert module.episode_seen.all() and (module.episode_means > 0).all()
    assert module.level_seen.any() and (module.level_means[module.level_seen] > 0).all()
    correlations = [r["train/perceptual_noise_corr"] for r in recorder.logged]
    assert all(-1.0 <= c <= 1.0 for c in correlations) and any(c != 0.0 for c in correlations)


def test_uniform_arm_never_reweights(folders, tmp_path):
    module, data = make(folders, adamix=False, warmup_steps=0)
    recorder = Recorder()
    fit(module, data, tmp_path, steps=2, callbacks=[recorder])
    assert all(r["train/active"] == 0.0 and r["train/weight_max"] == 1.0 for r in recorder.logged)
    assert not module.episode_seen.any()  # no per-episode means without AdaMix


def test_planner_lm_head_is_frozen_without_cotraining(folders):
    module, _ = make(folders)
    assert not module.model.planner.get_output_embeddings().weight.requires_grad
    assert all(p.requires_grad for n, p in module.model.named_parameters() if "lm_head" not in n)


def test_killed_adamix_run_resumes_to_the_same_weights_and_episode_means(folders, tmp_path):
    reference, data = make(folders, warmup_steps=1)
    fit(reference, data, tmp_path / "reference", steps=4)
    killed, data = make(folders, warmup_steps=1)
    with pytest.raises(Killed):
        fit(killed, data, tmp_path / "killed", steps=4, callbacks=[KillAtStep(3)])
    assert torch.load(tmp_path / "killed" / "last.ckpt", weights_only=False)["global_step"] == 2
    resumed, data = make(folders, warmup_steps=1)
    trainer = fit(resumed, data, tmp_path / "killed", steps=4, ckpt_path=str(tmp_path / "killed" / "last.ckpt"))
    assert trainer.global_step == 4
    assert_same_parameters(resumed, reference)
    assert torch.allclose(resumed.episode_means, reference.episode_means)
    assert torch.allclose(resumed.level_means, reference.level_means) and reference.level_seen.any()


def test_the_transfer_stage_keeps_its_recent_losses_in_the_checkpoint():
    model = transfer_tiny(image_size=16, block_out_channels=(8, 16), norm_num_groups=4)[0]
    module = TransferModule(model)
    module.recent = [0.5, 0.25]
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    resumed = TransferModule(transfer_tiny(image_size=16, block_out_channels=(8, 16), norm_num_groups=4)[0])
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.recent == [0.5, 0.25]


def test_the_episode_means_take_every_process_batch(folders, monkeypatch):
    """The running means are updated from the all-reduced per-episode sums and counts: with a stand-in all-reduce
    that adds another process's batch, every process's table is that of the union."""
    import lightning_modules.emma as emma_module
    from posttrain.losses.emma import episode_sums

    other = episode_sums(torch.tensor([1, 1]), torch.tensor([6.0, 2.0]), 2)  # the other process: episode 1 only
    monkeypatch.setattr(emma_module, "summed", lambda totals: totals + torch.stack(other))
    module, _ = make(folders)
    module.episode_means, module.episode_seen = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    actions = torch.zeros(2, 3, 4)
    batch = {"source": torch.tensor([0, 1]), "actions": actions, "action_mask": torch.ones(2, 3)}
    module.difficulty(torch.tensor([1.0, 1.0]), batch)
    torch.testing.assert_close(module.episode_means, torch.tensor([1.0, 3.0]))  # episode 1: (1 + 6 + 2) / 3
    assert module.episode_seen.all()


def test_the_noise_level_means_take_every_process_batch(folders, monkeypatch):
    """ℓ̃ divides each noising's loss by its noise level's running mean over every process's batch."""
    import lightning_modules.emma as emma_module
    from posttrain.losses.emma import episode_sums

    module, _ = make(folders, noise_bins=2)  # small_vla: R = 2 noisings; bins of its 100 timesteps: [0, 50), [50, 100)
    other = episode_sums(torch.tensor([0, 1]), torch.tensor([3.0, 4.0]), 2)  # the other process: one noising per bin
    monkeypatch.setattr(emma_module, "summed", lambda totals: totals + torch.stack(other))
    normalised = module.normalised_losses(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0, 2.0, 0.0]),
                                     torch.tensor([10, 60, 20, 90]))
    torch.testing.assert_close(module.level_means, torch.tensor([2.0, 7.0 / 3.0]))  # (1 + 2 + 3) / 3, (3 + 0 + 4) / 3
    # sample 0: (1 / 2 + 3 / (7/3)) / 2; sample 1: (2 / 2 + 0) / 2
    torch.testing.assert_close(normalised, torch.tensor([(0.5 + 9.0 / 7.0) / 2, 0.5]))


def test_tables_kept_with_other_noise_bins_start_afresh(folders):
    """A checkpoint from before the noise-level table (or with other bins) holds episode means of another loss."""
    old = {"episode_means": [0.2, 0.3], "episode_seen": [True, True]}
    module, _ = make(folders)  # noise_bins 10
    module.episode_means, module.episode_seen = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    with pytest.warns(UserWarning, match="method.noise_bins=0"):
        module.load_extra_state(old)
    assert not module.episode_seen.any() and not module.level_seen.any()
    raw, _ = make(folders, noise_bins=0)  # the same loss as the checkpoint's: loaded
    raw.load_extra_state(old)
    torch.testing.assert_close(raw.episode_means, torch.tensor([0.2, 0.3]))
    assert raw.episode_seen.all()


def test_noise_bins_outside_the_models_timesteps_name_the_key(folders):
    from posttrain.utils.config import ConfigError

    for bins in (-1, 101):
        with pytest.raises(ConfigError, match="method.noise_bins"):
            make(folders, noise_bins=bins)
