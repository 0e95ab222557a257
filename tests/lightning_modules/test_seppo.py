"""SePPO's checkpoint pool: grown every pool_every updates, kept in the checkpoint, so a killed run resumes to the
same pool and the same weights; the reference rules draw from it as documented."""
import pytest
import torch
from lightning.pytorch import Callback

from lightning_modules.seppo import SePPOModule
from posttrain.diffusion import diffusion_tiny
from posttrain.diffusion.lora import load_adapter_weights
from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config

SMALL = ["model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.num_train_timesteps=20",
         "model.sample_steps=2", "method.sample_steps=2", "data.task.train_size=60", "data.task.val_size=20",
         "data.task.test_size=20"]
# three epochs of two updates; a pool entry every 2 updates; the kill lands after the second epoch's checkpoint
BASE = ["experiment=seppo", "debug=tiny", "stages.pretrain=null", "stages.sft=null", "stages.spin_diffusion=null",
        "stages.ditto=null", "stages.no_aaf=null", "stages.indicator=null", "trainer.max_epochs=3",
        "method.pool_every=2", "method.diagnostics_every=1", *SMALL]


def test_killed_seppo_run_resumes_with_its_pool_to_the_same_result(tmp_path):
    reference = train(compose_config(BASE, tmp_path / "uninterrupted"))
    module = reference["module"]
    assert reference["trainer"].global_step == 6 and len(module.pool) == 3  # θ_0, θ_2, θ_4 (θ_6: no update left)

    killed_cfg = compose_config([*BASE, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=5"],
                                tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4 and len(state["posttrain"]["pool"]) == 2  # θ_4 joins at the next batch
    assert not any(k.startswith("reference.") for k in state["state_dict"])  # rebuilt from the pool

    resumed = train(compose_config([*BASE, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == 6 and len(resumed["module"].pool) == 3
    for saved, again in zip(module.pool, resumed["module"].pool):
        for name, value in saved.items():
            torch.testing.assert_close(again[name], value, rtol=0, atol=1e-6)
    assert_same_parameters(resumed["module"].model, module.model)
    assert resumed["module"].progress_info() == pytest.approx(module.progress_info())


def test_reference_rules_draw_from_the_pool():
    model, processor = diffusion_tiny(image_size=8, block_out_channels=(8,), norm_num_groups=4)
    picks = {}
    for rule in ("uniform", "latest", "initial"):
        module = SePPOModule(model, processor, reference=rule)
        module.pool = [{}, {}, {}, {}]
        draws = [module.draw_reference(update) for update in range(200)]
        picks[rule] = draws
    assert set(picks["initial"]) == {0} and set(picks["latest"]) == {3}
    counts = torch.bincount(torch.tensor(picks["uniform"]), minlength=4)
    assert counts.min() > 30  # every checkpoint drawn, about 50 times each


def test_bad_settings_name_their_key():
    model, processor = diffusion_tiny(image_size=8, block_out_channels=(8,), norm_num_groups=4)
    for kwargs, key in [({"reference": "best"}, "method.reference"), ({"flip": "maybe"}, "method.flip"),
                        ({"beta": 0}, "method.beta"), ({"pool_every": 0}, "method.pool_every"),
                        ({"diagnostics_every": 3}, "method.reward")]:
        with pytest.raises(Exception, match=key.replace(".", r"\.")):
            SePPOModule(model, processor, **kwargs)


def test_the_latest_pool_entry_is_the_current_model_only_right_after_it_joined():
    model, processor = diffusion_tiny(image_size=8, block_out_channels=(8,), norm_num_groups=4)
    module = SePPOModule(model, processor, reference="latest", pool_every=15)
    module.pool = [{}, {}, {}]  # θ_0, θ_15, θ_30
    assert module.is_current(2, 30) and not module.is_current(1, 30) and not module.is_current(0, 30)
    assert not module.is_current(2, 31)


class Recorder(Callback):
    """Per training batch: the update it belongs to (global_step at its start), the pool entry its reference was
    loaded from, and the pool's size."""

    def __init__(self):
        self.rows = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append([trainer.global_step])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows[-1] += [pl_module.loaded, len(pl_module.pool)]


def test_updates_are_optimizer_steps_under_gradient_accumulation(tmp_path):
    """Three epochs of two batches accumulated into one update each: the pool grows per update (θ_0, θ_1, θ_2 with
    pool_every=1), not per batch, and both micro-batches of an update use the same reference."""
    overrides = [*BASE, "method.pool_every=1", "method.reference=uniform", "trainer.accumulate_grad_batches=2",
                 "+callbacks.record._target_=tests.lightning_modules.test_seppo.Recorder"]
    result = train(compose_config(overrides, tmp_path))
    recorder = next(c for c in result["trainer"].callbacks if isinstance(c, Recorder))
    assert result["trainer"].global_step == 3 and len(result["module"].pool) == 3
    assert [row[0] for row in recorder.rows] == [0, 0, 1, 1, 2, 2]
    assert [row[2] for row in recorder.rows] == [1, 1, 2, 2, 3, 3]  # θ_k joined before update k's first batch
    for first, second in zip(recorder.rows[::2], recorder.rows[1::2]):
        assert first[1] == second[1]  # one reference per update
    pool = result["module"].pool
    assert all(any(not torch.equal(a[k], b[k]) for k in a) for a, b in zip(pool, pool[1:]))  # three different θ
    seeds = {result["module"].batch_seed(update, batch) for update in range(3) for batch in range(6)}
    assert len(seeds) == 6  # the two micro-batches of an update draw their own noise (batch_idx counts mod 2)


def perturbed(weights: dict, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in weights.items()}


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_the_reference_sample_comes_from_the_reference_unet(lora):
    """x^r is sampled by the pool entry drawn (here the latest, with weights unlike the current model's): it equals a
    sample of a separate model holding those weights from the batch's noise, and differs from the current model's."""
    model, processor = diffusion_tiny(image_size=8, block_out_channels=(8, 16), norm_num_groups=4, sample_steps=3,
                                      num_train_timesteps=20, attention_resolution=8, lora=lora)
    module = SePPOModule(model, processor, reference="latest", sample_steps=3)
    module.log_metrics = lambda *args, **kwargs: None  # no trainer to log to
    distinct = perturbed(model.trained_weights(), seed=3)
    module.pool = [model.trained_weights(), distinct]
    samples = []
    original = model.sample

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        samples.append((kwargs.get("unet"), out))
        return out
    model.sample = recording
    batch = {"pixels": torch.rand(3, 3, 8, 8) * 2 - 1, "class_labels": torch.tensor([0, 1, 2])}
    module.training_step(batch, 0)
    (unet, reference_sample), = samples
    assert unet is module.reference and module.loaded == 1

    holder, _ = diffusion_tiny(image_size=8, block_out_channels=(8, 16), norm_num_groups=4, sample_steps=3,
                               num_train_timesteps=20, attention_resolution=8, lora=lora)
    if lora is None:
        holder.unet.load_state_dict(distinct)
    else:
        load_adapter_weights(holder.unet, distinct, "default")
    condition = {"class_labels": batch["class_labels"]}
    generator = lambda: module.seeded(module.batch_seed(0, 0), "cpu")  # noqa: E731
    expected = original(condition, generator=generator(), steps=3, unet=holder.unet)
    torch.testing.assert_close(reference_sample, expected)
    current = original(condition, generator=generator(), steps=3)
    assert (reference_sample - current).abs().max() > 1e-2


def test_data_parallel_processes_draw_apart_and_rank_zero_keeps_its_seeds():
    from types import SimpleNamespace
    model, processor = diffusion_tiny(image_size=8, block_out_channels=(8,), norm_num_groups=4)
    module = SePPOModule(model, processor)
    alone = module.batch_seed(3, 0)
    seeds = {}
    for rank in (0, 1):
        module._trainer = SimpleNamespace(global_rank=rank, accumulate_grad_batches=1)
        seeds[rank] = module.batch_seed(3, 0)
    assert seeds[0] == alone  # the documented table's seeds (one process) are unchanged
    assert seeds[1] != seeds[0]
