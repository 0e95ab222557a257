"""SePPO and Diffusion-DPO with model.lora through train.py's pipeline: two steps change the adapter alone, the
saved directory loads back as a plain Stable Diffusion pipeline, and a killed run resumes with its pool of adapters."""
import os
import subprocess
import sys

import pytest
import torch
from diffusers import StableDiffusionPipeline
from hydra.utils import instantiate

from posttrain.diffusion import stable_diffusion
from posttrain.diffusion.lora import AdapterView
from posttrain.pipeline import train
from tests.helpers import ROOT, Killed, assert_same_parameters, compose_config
from tests.lightning_modules.test_seppo import BASE
from tests.models.test_diffusion_models import tiny_sd_directory

LORA = "model.lora={r: 4, alpha: 8}"
# SePPO alone (no pretraining stage) on the procedural images at the tiny pipeline's 32x32, class names as text
SD_SEPPO = ["method=seppo", "reward=bright_centred", "data=blobs", "data.task.image_size=32", "debug=tiny",
            "model.sample_steps=2", "method.sample_steps=2", "method.diagnostics_every=1", "trainer.max_epochs=1",
            *[f"data.task.{split}_size=20" for split in ("train", "val", "test")]]


def split_weights(unet) -> tuple[dict, dict]:
    """(trained adapter, base) weights of a LoRA UNet: the frozen reference slot is neither."""
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    return ({k: v for k, v in state.items() if ".default." in k},
            {k: v for k, v in state.items() if ".lora_" not in k})


def test_seppo_on_stable_diffusion_with_lora_trains_the_adapter_and_saves_a_pipeline(tmp_path):
    directory = tiny_sd_directory(tmp_path / "sd")
    cfg = compose_config([*SD_SEPPO, "model=sd", f"model.name_or_path={directory}", LORA,
                          f"stages.main.save_dir={tmp_path}/model"], tmp_path / "run")
    result = train(cfg)
    module = result["module"]
    assert result["trainer"].global_step == 2 and isinstance(module.reference, AdapterView)
    start, _ = stable_diffusion(directory, lora={"r": 4, "alpha": 8})
    (adapter, base), (adapter_start, base_start) = split_weights(module.model.unet), split_weights(start.unet)
    assert all(torch.equal(base_start[k], v) for k, v in base.items())  # the base weights stay as loaded
    assert all(not torch.equal(adapter_start[k], v) for k, v in adapter.items())  # every adapter weight trained
    assert len(module.pool) == 1 and set(module.pool[0]) == {k.replace(".default", "") for k in adapter}
    assert {n for n, p in module.named_parameters() if p.requires_grad} == {f"model.unet.{k}" for k in adapter}

    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "model", safety_checker=None)  # merged UNet
    condition = {"input_ids": next(iter(result["trainer"].datamodule.train_dataloader()))["input_ids"]}
    samples = module.model.sample(condition, generator=torch.Generator().manual_seed(0))
    merged = module.model.sample(condition, generator=torch.Generator().manual_seed(0), unet=pipeline.unet)
    torch.testing.assert_close(merged, samples)
    assert (tmp_path / "model" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_diffusion_dpo_with_lora_has_the_start_as_its_reference(tmp_path):
    overrides = ["experiment=diffusion_dpo", "debug=tiny", "stages.pretrain=null", "stages.main.start=model",
                 "model.block_out_channels=[8,16]", "model.norm_num_groups=4", "model.sample_steps=2",
                 "trainer.max_epochs=1", LORA, *[f"data.task.{split}_size=40" for split in ("train", "val", "test")]]
    cfg = compose_config(overrides, tmp_path)
    result = train(cfg)
    module = result["module"]
    assert result["trainer"].global_step == 2
    assert isinstance(module.reference, AdapterView) and module.reference.adapter is None  # adapters disabled
    assert {n for n, p in module.named_parameters() if p.requires_grad} == \
        {f"model.unet.{k}" for k in split_weights(module.model.unet)[0]}
    batch = next(iter(result["trainer"].datamodule.train_dataloader()))
    x = module.model.to_latents(batch["chosen_pixels"])
    t = torch.full((x.shape[0],), 5)
    inputs = module.model.unet_inputs({"class_labels": batch["class_labels"]})
    fresh = instantiate(cfg.model, lora=None)[0]  # the start model, without an adapter
    start = module.model.predict(x, t, inputs, unet=fresh.unet)
    torch.testing.assert_close(module.model.predict(x, t, inputs, unet=module.reference), start)
    assert not torch.allclose(module.model.predict(x, t, inputs), start)  # the policy moved away from it


def test_killed_seppo_run_with_lora_resumes_with_its_pool_of_adapters(tmp_path):
    lora = LORA
    reference = train(compose_config([*BASE, lora], tmp_path / "uninterrupted"))
    module = reference["module"]
    assert len(module.pool) == 3 and all(".lora_" in k for entry in module.pool for k in entry)
    killed = [*BASE, lora, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=5"]
    with pytest.raises(Killed):
        train(compose_config(killed, tmp_path / "killed"))
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    resumed = train(compose_config([*BASE, lora, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == 6 and len(resumed["module"].pool) == 3
    for saved, again in zip(module.pool, resumed["module"].pool):
        assert saved.keys() == again.keys()
        for name, value in saved.items():
            torch.testing.assert_close(again[name], value, rtol=0, atol=1e-6)
    assert_same_parameters(resumed["module"].model, module.model)
    assert resumed["module"].progress_info() == pytest.approx(module.progress_info())


def test_seppo_with_lora_in_bfloat16_trains_a_float32_adapter_on_a_frozen_bfloat16_base(tmp_path):
    cfg = compose_config([*BASE, LORA, "model.dtype=bfloat16", "trainer.precision=bf16-mixed",
                          "trainer.max_epochs=1"], tmp_path)
    result = train(cfg)
    module = result["module"]
    assert result["trainer"].global_step == 2 and result["trainer"].precision == "bf16-mixed"
    start = instantiate(cfg.model)[0]
    (adapter, base), (adapter_start, base_start) = split_weights(module.model.unet), split_weights(start.unet)
    assert {v.dtype for v in base.values()} == {torch.bfloat16} and {v.dtype for v in adapter.values()} == {
        torch.float32}
    assert all(torch.equal(base_start[k], v) for k, v in base.items())
    assert all(not torch.equal(adapter_start[k], v) for k, v in adapter.items())


@pytest.mark.slow
def test_seppo_with_lora_runs_with_two_cpu_processes(tmp_path):
    """DDP: the policy's adapter is the only synchronised parameter set, the reference adapter switches inside the
    step, and both processes make the same updates."""
    overrides = [o for o in BASE if not o.startswith("trainer.max_epochs")]
    command = [sys.executable, "train.py", *overrides, "'model.lora={r: 4, alpha: 8}'", "trainer.max_epochs=2",
               "method.pool_every=1",
               "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.run.dir={tmp_path}",
               f"paths.cache_dir={tmp_path}/cache", "~callbacks.progress_bar"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(" ".join(command), shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    state = torch.load(tmp_path / "checkpoints" / "main" / "last.ckpt", weights_only=False)
    # 8 winners over 2 processes in batches of 4: one update per epoch; θ_0 and θ_1 joined before updates 0 and 1
    assert state["global_step"] == 2 and len(state["posttrain"]["pool"]) == 2
    assert all(".lora_" in k for entry in state["posttrain"]["pool"] for k in entry)
