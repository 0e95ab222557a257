"""LoRA on the diffusion UNet (model.lora): only the adapter trains, references share the base weights, the saved
directory reloads (merged UNet, and the adapter alone onto the start model), bad settings name their key."""
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DModel
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from posttrain.diffusion import diffusion_tiny, stable_diffusion
from posttrain.diffusion.lora import adapter_weights
from posttrain.models import save
from posttrain.utils.config import ConfigError
from tests.models.test_diffusion_models import TINY, tiny_sd_directory, train_step

LORA = {"r": 4, "alpha": 8}


def randomise_adapter(model, seed: int = 1) -> None:
    """Nonzero B (a fresh adapter has B = 0, the identity), so the adapter changes the UNet's output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.unet.named_parameters():
            if "lora_B.default" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def split(model) -> tuple[dict, dict]:
    """(adapter, base) weights of the UNet, cloned."""
    state = {k: v.clone() for k, v in model.unet.state_dict().items()}
    return ({k: v for k, v in state.items() if ".lora_" in k}, {k: v for k, v in state.items() if ".lora_" not in k})


def sample(model, condition, unet=None):
    return model.sample(condition, generator=torch.Generator().manual_seed(0), unet=unet)


def test_only_the_adapter_trains_and_the_optimizer_sees_only_it():
    model, processor = diffusion_tiny(**TINY, lora=LORA)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    adapter, base = split(model)
    for _ in range(2):
        train_step(model, torch.rand(2, 3, 16, 16) * 2 - 1, processor.condition(["circle", "square"]))
    adapter_after, base_after = split(model)
    assert all(torch.equal(base[k], v) for k, v in base_after.items())
    assert all(not torch.equal(adapter[k], v) for k, v in adapter_after.items())  # A moves from the 2nd step


def test_references_share_the_base_weights(tmp_path):
    model, processor = diffusion_tiny(**TINY, lora=LORA)
    condition = processor.condition(["circle", "diamond"])
    base_samples = sample(model, condition)
    start = model.frozen_reference(start=True)  # adapters disabled
    pooled = model.frozen_reference()  # a frozen second adapter, now the current weights
    assert not list(start.parameters()) and not list(pooled.parameters())  # no UNet of their own
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    randomise_adapter(model)
    current = sample(model, condition)
    assert not torch.allclose(current, base_samples, atol=1e-3)
    torch.testing.assert_close(sample(model, condition, unet=start), base_samples)  # the start, whatever trains
    torch.testing.assert_close(sample(model, condition, unet=pooled), base_samples)  # the weights it was given
    model.load_reference(pooled, model.trained_weights())
    torch.testing.assert_close(sample(model, condition, unet=pooled), current)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable  # switching put them back
    assert model.unet.training


def test_tiny_lora_model_saves_merged_and_its_adapter(tmp_path):
    model, processor = diffusion_tiny(**TINY, lora=LORA)
    randomise_adapter(model)
    condition = processor.condition(["circle", "square"])
    samples = sample(model, condition)
    save(model, processor, str(tmp_path))
    unet = UNet2DModel.from_pretrained(tmp_path, subfolder="unet")  # diffusers' loader: a plain, merged UNet
    assert not any("lora" in name for name in unet.state_dict())
    torch.testing.assert_close(sample(model, condition, unet=unet), samples)
    again, _ = diffusion_tiny(name_or_path=str(tmp_path))  # a later stage's start
    torch.testing.assert_close(sample(again, condition), samples)
    # the adapter alone (peft's format) on the start model gives the trained one back
    start, _ = diffusion_tiny(**TINY)
    inject_adapter_in_model(LoraConfig.from_pretrained(tmp_path / "lora"), start.unet)
    set_peft_model_state_dict(start.unet, load_file(tmp_path / "lora" / "adapter_model.safetensors"))
    torch.testing.assert_close(sample(start, condition), samples)


def test_stable_diffusion_with_lora_saves_a_pipeline_and_diffusers_lora_weights(tmp_path):
    directory = tiny_sd_directory(tmp_path / "sd")
    model, processor = stable_diffusion(directory, sample_steps=2, lora={**LORA, "target_modules": ["to_q", "to_v"]})
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.unet.named_parameters() if p.requires_grad}
    assert targets == {"to_q", "to_v"}
    adapter, base = split(model)
    condition = processor.condition(["a red circle", "a blue square"])
    for _ in range(2):
        train_step(model, torch.rand(2, 3, 32, 32) * 2 - 1, condition)
    adapter_after, base_after = split(model)
    assert all(torch.equal(base[k], v) for k, v in base_after.items())
    assert all(not torch.equal(adapter[k], v) for k, v in adapter_after.items())
    randomise_adapter(model)  # two small steps barely move the samples; a large adapter makes the check sharp
    samples = sample(model, condition)
    assert not torch.allclose(samples, sample(model, condition, unet=model.frozen_reference(start=True)), atol=1e-3)
    save(model, processor, str(tmp_path / "out"))
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "out", safety_checker=None)
    assert not any("lora" in name for name in pipeline.unet.state_dict())
    torch.testing.assert_close(sample(model, condition, unet=pipeline.unet), samples)
    again, _ = stable_diffusion(str(tmp_path / "out"), sample_steps=2)
    torch.testing.assert_close(sample(again, condition), samples)
    # diffusers' own LoRA loader puts the adapter on the start pipeline
    start = StableDiffusionPipeline.from_pretrained(directory, safety_checker=None)
    start.load_lora_weights(str(tmp_path / "out" / "lora"))
    torch.testing.assert_close(sample(model, condition, unet=start.unet), samples)


def test_bfloat16_base_keeps_a_float32_adapter():
    model, processor = diffusion_tiny(**TINY, dtype="bfloat16", lora=LORA)
    dtypes = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.bfloat16} and {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    before = adapter_weights(model.unet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_step(model, torch.rand(2, 3, 16, 16) * 2 - 1, processor.condition(["circle", "square"]))
    after = adapter_weights(model.unet)
    assert any(not torch.equal(before[k], v) for k, v in after.items())


@pytest.mark.parametrize("lora, key", [({"r": 0}, "model.lora.r"), ({"r": -2}, "model.lora.r"),
                                       ({"r": 4, "alpha": 0}, "model.lora.alpha"),
                                       ({"dropout": 1.5}, "model.lora.dropout"),
                                       ({"target_modules": ["to_q", "to_nothing"]}, "model.lora.target_modules"),
                                       ({"target_modules": ["attentions"]}, "model.lora.target_modules"),
                                       ({"rank": 4}, "model.lora.rank")])
def test_bad_lora_settings_name_their_key(lora, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        diffusion_tiny(**TINY, lora=lora)
