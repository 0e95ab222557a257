"""SePPO's checkpoint pool: grown every pool_every updates, kept in the checkpoint, so a killed run resumes to the
same pool and the same weights; the reference rules draw from it as documented."""
import pytest
import torch

from lightning_modules.seppo import SePPOModule
from posttrain.diffusion import diffusion_tiny
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
    assert reference["trainer"].global_step == 6 and module.updates == 6 and len(module.pool) == 4  # θ_0 + 3

    killed_cfg = compose_config([*BASE, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=5"],
                                tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4 and len(state["posttrain"]["pool"]) == 3 and state["posttrain"]["updates"] == 4
    assert not any(k.startswith("reference.") for k in state["state_dict"])  # rebuilt from the pool

    resumed = train(compose_config([*BASE, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == 6 and len(resumed["module"].pool) == 4
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
        draws = []
        for update in range(200):
            module.updates = update
            draws.append(module.draw_reference())
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
    module.updates = 30
    assert module.is_current(2) and not module.is_current(1) and not module.is_current(0)
    module.updates = 31
    assert not module.is_current(2)
