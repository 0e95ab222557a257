"""Diffusion model builders: the tiny pixel UNet and a Stable Diffusion directory, trained, sampled, saved, reloaded."""
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel, UNet2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from lightning_modules.diffusion_sft import noised
from posttrain.diffusion import diffusion_tiny, stable_diffusion
from posttrain.losses.diffusion import denoising_loss
from posttrain.models import save
from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.utils.config import ConfigError

TINY = dict(image_size=16, block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=20, sample_steps=3)


def train_step(model, x0, condition) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x_t, noise, t = noised(model, model.to_latents(x0))
    loss, _ = denoising_loss(model.predict(x_t, t, model.unet_inputs(condition)), noise)
    loss.backward()
    optimizer.step()


def test_tiny_unet_has_attention_only_at_8x8_or_below():
    model, _ = diffusion_tiny(**{**TINY, "image_size": 32, "block_out_channels": (8, 8, 16)})
    assert list(model.unet.config.down_block_types) == ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]
    assert list(model.unet.config.up_block_types) == ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]
    with pytest.raises(ConfigError, match="model.block_out_channels"):
        diffusion_tiny(**{**TINY, "block_out_channels": (8, 10)})


def test_tiny_model_trains_samples_and_round_trips(tmp_path):
    model, processor = diffusion_tiny(**TINY)
    assert isinstance(model.noise_scheduler.__class__.__name__, str) and isinstance(model.sampler, DDIMScheduler)
    condition = processor.condition(["circle", "diamond"])
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    train_step(model, torch.rand(2, 3, 16, 16) * 2 - 1, condition)
    assert any(not torch.equal(before[k], v) for k, v in model.unet.state_dict().items())
    samples = model.sample(condition, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 16, 16) and samples.abs().max() <= 1
    save(model, processor, str(tmp_path))
    unet = UNet2DModel.from_pretrained(tmp_path, subfolder="unet")  # diffusers' own loader
    for name, value in model.unet.state_dict().items():
        assert torch.equal(unet.state_dict()[name], value), name
    again, processor_again = diffusion_tiny(name_or_path=str(tmp_path))
    assert processor_again.classes == processor.classes and again.num_timesteps == 20
    torch.testing.assert_close(again.sample(condition, generator=torch.Generator().manual_seed(0)), samples)


def tiny_sd_directory(path) -> str:
    """A Stable Diffusion pipeline of tiny random parts (VAE 32 -> 16 latents, CLIP text, conditional UNet), saved
    the way a real SD-1.5 directory is."""
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer(model_max_length=16)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id))
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                       scheduler=DDIMScheduler(num_train_timesteps=50, clip_sample=False),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(path)
    return str(path)


def test_stable_diffusion_directory_trains_its_unet_only_and_saves_a_pipeline(tmp_path):
    model, processor = stable_diffusion(tiny_sd_directory(tmp_path / "sd"), sample_steps=2)
    assert processor.image_size == 32 and processor.classes is None
    condition = processor.condition(["a red circle", "a blue square"])
    assert condition["input_ids"].shape == (2, 16)
    frozen = {k: v.clone() for k, v in model.vae.state_dict().items()}
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    train_step(model, torch.rand(2, 3, 32, 32) * 2 - 1, condition)
    assert any(not torch.equal(before[k], v) for k, v in model.unet.state_dict().items())
    assert all(torch.equal(frozen[k], v) for k, v in model.vae.state_dict().items())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    samples = model.sample(condition, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 32, 32)
    save(model, processor, str(tmp_path / "out"))
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path / "out", safety_checker=None)
    for name, value in model.unet.state_dict().items():
        assert torch.equal(reloaded.unet.state_dict()[name], value), name
    again, _ = stable_diffusion(str(tmp_path / "out"), sample_steps=2)
    torch.testing.assert_close(again.sample(condition, generator=torch.Generator().manual_seed(0)), samples)


def test_stable_diffusion_needs_a_pipeline_directory(tmp_path):
    with pytest.raises(ConfigError, match="model.name_or_path"):
        stable_diffusion(str(tmp_path))


def test_the_v_target_is_the_epsilon_error_reweighted_by_one_over_alpha_bar():
    from posttrain.diffusion.models import diffusion_tiny
    model, _ = diffusion_tiny(image_size=8, block_out_channels=(8, 16), prediction_type="v_prediction")
    generator = torch.Generator().manual_seed(0)
    x0, noise, guess = (torch.randn(4, 3, 8, 8, generator=generator) for _ in range(3))
    timesteps = torch.tensor([0, 30, 60, 99])
    alpha_bar = model.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    v = model.target(x0, noise, timesteps)
    assert torch.allclose(v, alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0, atol=1e-6)
    # the same network output read as v implies ε_θ = √(1−ᾱ) x_t + √ᾱ v_θ; its ε error is √ᾱ times the v error
    x_t = model.add_noise(x0, noise, timesteps)
    implied_eps = (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * guess
    rows = slice(0, 3)  # at t = 99 ᾱ ≈ 2e-7: float32 cannot resolve the division there
    assert torch.allclose((v - guess)[rows], ((noise - implied_eps) / alpha_bar.sqrt())[rows], atol=1e-4)
    epsilon, _ = diffusion_tiny(image_size=8, block_out_channels=(8, 16), prediction_type="epsilon")
    assert torch.equal(epsilon.target(x0, noise, timesteps), noise)
