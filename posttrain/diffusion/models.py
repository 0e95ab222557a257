"""Diffusion model builders named by `conf/model/diffusion_tiny.yaml` and `conf/model/sd.yaml`.

Each returns `(DiffusionModel, DiffusionProcessor)`, the pair every model builder returns (the network and what turns
examples into its inputs). The networks and schedulers are diffusers' own: a `UNet2DModel` (class-conditional, in
pixel space) or a Stable Diffusion pipeline's `UNet2DConditionModel` with its VAE and CLIP text encoder; training
noises with `DDPMScheduler.add_noise`, sampling steps a `DDIMScheduler` built from the same config.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping

import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DModel
from diffusers.utils import convert_state_dict_to_diffusers
from safetensors.torch import save_file
from torch import nn

from posttrain.diffusion import lora as adapters
from posttrain.models.builders import DTYPES, check_dtype
from posttrain.utils.config import ConfigError, check

PROCESSOR_FILE = "posttrain_processor.json"
MODEL_FILE = "posttrain_diffusion.json"
LORA_FOLDER = "lora"  # the trained adapter alone, beside the merged model


class DiffusionProcessor:
    """Prompts -> the UNet's conditioning tensors, and the image geometry the model expects.

    Class-conditional (`classes` given): a prompt must be one of the class names; its index is the class label.
    Text-conditional (`tokenizer` given): the prompt's token ids, padded or truncated to `max_length`.
    """

    def __init__(self, image_size: int, classes: list[str] | None = None, tokenizer=None, max_length: int = 77):
        check((classes is None) != (tokenizer is None), "model.classes", "a diffusion model is conditioned on "
              "classes or on text (a tokenizer), exactly one of them")
        self.image_size, self.tokenizer, self.max_length = image_size, tokenizer, max_length
        self.classes = list(classes) if classes is not None else None

    def condition(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"class_labels": (B,)} or {"input_ids": (B, max_length)}; an unknown class name is a KeyError."""
        if self.classes is not None:
            index = {name: i for i, name in enumerate(self.classes)}
            missing = [p for p in prompts if p not in index]
            if missing:
                raise KeyError(f"prompt {missing[0]!r} is not one of the model's classes {self.classes}")
            return {"class_labels": torch.tensor([index[p] for p in prompts], dtype=torch.long)}
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")["input_ids"]  # (B, L)
        return {"input_ids": ids}

    def save_pretrained(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, PROCESSOR_FILE), "w") as handle:
            json.dump({"image_size": self.image_size, "classes": self.classes, "max_length": self.max_length}, handle)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(os.path.join(directory, "tokenizer"))


class DiffusionModel(nn.Module):
    """A conditional noise predictor ε_θ(x_t, t, c) with its DDPM forward process and DDIM sampler.

    Pixel models work on images in [-1, 1] directly; latent models (Stable Diffusion) encode them with the VAE
    first (its posterior mean, times the VAE's scaling factor) and decode samples back. Only the UNet trains: the
    VAE and text encoder are frozen. `unet=` on the prediction and sampling calls runs another UNet of the same
    architecture (a frozen reference) with this model's encoders and schedule.

    With `lora` (`model.lora`, see `posttrain.diffusion.lora`) the UNet gets a peft LoRA adapter and only the
    adapter trains; `trained_weights`, `frozen_reference` and `save_pretrained` follow.
    """

    def __init__(self, unet: nn.Module, scheduler_config: dict, text_encoder: nn.Module | None = None,
                 vae: nn.Module | None = None, tokenizer=None, sample_steps: int = 20,
                 lora_spec: Mapping | None = None):
        super().__init__()
        check(sample_steps > 0, "model.sample_steps", f"must be > 0, got {sample_steps}")
        self.lora = adapters.add_lora(unet, lora_spec) if lora_spec is not None else None
        self.unet, self.text_encoder, self.vae = unet, text_encoder, vae
        for frozen in (text_encoder, vae):
            if frozen is not None:
                frozen.requires_grad_(False)
        self.tokenizer, self.sample_steps = tokenizer, sample_steps  # the tokenizer only to save a whole pipeline
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.sampler = DDIMScheduler.from_config(scheduler_config)

    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps of training."""
        return int(self.noise_scheduler.config.num_train_timesteps)

    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    # ---- conditioning and the forward process -------------------------------------------------------------------
    def unet_inputs(self, condition: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The UNet's conditioning keyword: class labels as they are, token ids through the (frozen) text encoder."""
        if "class_labels" in condition:
            return {"class_labels": condition["class_labels"]}
        with torch.no_grad():
            hidden = self.text_encoder(condition["input_ids"])[0]  # (B, L, D)
        return {"encoder_hidden_states": hidden.to(self.unet.dtype)}

    def to_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> the space the UNet denoises."""
        if self.vae is None:
            return pixels
        with torch.no_grad():
            posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor  # (B, C, h, w)

    def to_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> (B, 3, H, W) images clamped to [-1, 1]."""
        if self.vae is not None:
            with torch.no_grad():
                latents = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return latents.float().clamp(-1, 1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (DDPMScheduler.add_noise)."""
        return self.noise_scheduler.add_noise(x0, noise, timesteps)

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict at x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε: ε ("epsilon"),
        v = √ᾱ_t ε − √(1−ᾱ_t) x_0 ("v_prediction", Salimans & Ho 2022) or x_0 ("sample"), as the scheduler says."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(x0, noise, timesteps)
        if self.prediction_type == "sample":
            return x0
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    def predict(self, x_t: torch.Tensor, timesteps: torch.Tensor, inputs: dict, unet: nn.Module | None = None):
        """The UNet's output at (x_t, t, c) in float32 (ε, v or x_0: `prediction_type`) from this UNet or `unet`;
        `inputs` from `unet_inputs`."""
        unet = unet if unet is not None else self.unet
        return unet(x_t.to(unet.dtype), timesteps, **inputs).sample.float()  # (B, C, h, w)

    # ---- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, condition: dict[str, torch.Tensor], generator: torch.Generator | None = None,
               steps: int | None = None, unet: nn.Module | None = None, eta: float = 0.0) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] by `steps` DDIM steps (default `sample_steps`) from Gaussian noise drawn
        with `generator`; one sample per row of `condition`."""
        inputs = self.unet_inputs(condition)
        rows = next(iter(condition.values())).shape[0]
        device = next(self.unet.parameters()).device
        latents = torch.randn((rows, *self.latent_shape()), generator=generator, device=device)  # (B, C, h, w)
        sampler = DDIMScheduler.from_config(self.sampler.config)
        sampler.set_timesteps(steps or self.sample_steps, device=device)
        for t in sampler.timesteps:
            noise = self.predict(latents, t, inputs, unet=unet)
            latents = sampler.step(noise, t, latents, eta=eta, generator=generator).prev_sample
        return self.to_pixels(latents)

    # ---- what trains, references ---------------------------------------------------------------------------------
    def trained_weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of the weights that train: the UNet's, or with LoRA its adapter's alone (a pool entry)."""
        if self.lora is not None:
            return adapters.adapter_weights(self.unet)
        return {k: v.detach().to("cpu", copy=True) for k, v in self.unet.state_dict().items()}

    def frozen_reference(self, start: bool = False) -> nn.Module:
        """A frozen UNet for a reference model, now the current one; `load_reference` puts `trained_weights`
        output into it. Without LoRA a copy of the UNet. With LoRA the same UNet seen through a second, frozen
        adapter, or with its adapters disabled when `start` (the start model, which then never changes)."""
        if self.lora is None:
            return copy.deepcopy(self.unet).eval().requires_grad_(False)
        view = adapters.AdapterView(self.unet, adapter=None if start else adapters.REFERENCE)
        if not start:
            view.load_weights(self.trained_weights())
        return view

    @staticmethod
    def load_reference(reference: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
        if isinstance(reference, adapters.AdapterView):
            reference.load_weights(weights)
        else:
            reference.load_state_dict(weights)

    # ---- saving -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str) -> None:
        """A Stable Diffusion model as a `StableDiffusionPipeline` directory; a pixel model as `unet/` and
        `scheduler/` (each `from_pretrained(directory, subfolder=...)`-loadable) plus its sampling settings.

        With LoRA the saved UNet is the merged one (W + ΔW), so the directory loads as a plain model, and `lora/`
        holds the adapter alone, for the start model it was trained on: diffusers' LoRA file for a pipeline
        (`pipeline.load_lora_weights(directory + "/lora")`), peft's adapter directory for a pixel UNet."""
        os.makedirs(directory, exist_ok=True)
        unet = adapters.merged_unet(self.unet) if self.lora is not None else self.unet
        if self.vae is not None:
            pipeline = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                               unet=unet, scheduler=self.sampler, safety_checker=None,
                                               feature_extractor=None, requires_safety_checker=False)
            pipeline.save_pretrained(directory)
        else:
            unet.save_pretrained(os.path.join(directory, "unet"))
            self.noise_scheduler.save_pretrained(os.path.join(directory, "scheduler"))
        if self.lora is not None:
            self.save_adapter(os.path.join(directory, LORA_FOLDER))
        with open(os.path.join(directory, MODEL_FILE), "w") as handle:
            json.dump({"sample_steps": self.sample_steps}, handle)

    def save_adapter(self, directory: str) -> None:
        weights = adapters.adapter_weights(self.unet)
        if self.vae is not None:
            StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=convert_state_dict_to_diffusers(
                weights), unet_lora_adapter_metadata=self.lora.to_dict())
        else:
            self.lora.save_pretrained(directory)  # adapter_config.json
            save_file(weights, os.path.join(directory, "adapter_model.safetensors"))


def attention_levels(image_size: int, levels: int, attention_resolution: int) -> list[bool]:
    """Whether each UNet level (resolution image_size / 2^i) gets self-attention: only at <= attention_resolution,
    as attention over larger maps costs far more than it brings at this scale."""
    return [image_size // 2**i <= attention_resolution for i in range(levels)]


def diffusion_tiny(
    image_size: int = 16,
    classes: list[str] | tuple[str, ...] = ("circle", "square", "diamond"),
    block_out_channels: list[int] | tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    attention_resolution: int = 8,
    norm_num_groups: int = 8,
    num_train_timesteps: int = 100,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "v_prediction",
    sample_steps: int = 20,
    seed: int = 0,
    name_or_path: str | None = None,
    dtype: str = "float32",
    lora: Mapping | None = None,
):
    """A class-conditional `UNet2DModel` on RGB images of `image_size`², seeded random init, with a DDPM schedule of
    `num_train_timesteps` steps; `name_or_path` loads a saved one (a stage's output) instead, in `dtype`. `lora`
    ({r, alpha, dropout, target_modules}) trains a LoRA adapter of the UNet instead of the whole UNet."""
    check_dtype(dtype)
    if name_or_path:
        return load_tiny(name_or_path, dtype, lora)
    channels = list(block_out_channels)
    check(image_size % 2 ** (len(channels) - 1) == 0, "model.image_size",
          f"must be divisible by 2^(levels-1) = {2 ** (len(channels) - 1)}")
    check(all(c % norm_num_groups == 0 for c in channels), "model.block_out_channels",
          f"every entry must be divisible by model.norm_num_groups={norm_num_groups}")
    check(len(classes) > 0, "model.classes", "at least one class")
    attention = attention_levels(image_size, len(channels), attention_resolution)
    unet_config = dict(
        sample_size=image_size, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
        layers_per_block=layers_per_block, norm_num_groups=norm_num_groups, num_class_embeds=len(classes),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        attention_head_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(**unet_config)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                              prediction_type=prediction_type, clip_sample=True)
    unet = unet if dtype == "float32" else unet.to(DTYPES[dtype])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the adapter's random init
        model = DiffusionModel(unet, scheduler.config, sample_steps=sample_steps, lora_spec=lora)
    return model, DiffusionProcessor(image_size, classes=list(classes))


def load_tiny(directory: str, dtype: str, lora_spec: Mapping | None = None):
    check(os.path.isfile(os.path.join(directory, "unet", "config.json")), "model.name_or_path",
          f"{directory!r} is not a saved pixel diffusion model (no unet/config.json)")
    unet = UNet2DModel.from_pretrained(directory, subfolder="unet", dtype=DTYPES[dtype])
    scheduler = DDPMScheduler.from_pretrained(directory, subfolder="scheduler")
    settings, processor = read_json(directory, MODEL_FILE), read_json(directory, PROCESSOR_FILE)
    model = DiffusionModel(unet.train(), scheduler.config, sample_steps=settings.get("sample_steps", 20),
                           lora_spec=lora_spec)
    return model, DiffusionProcessor(processor["image_size"], classes=processor["classes"])


def stable_diffusion(name_or_path: str, dtype: str = "float32", sample_steps: int = 20, lora: Mapping | None = None):
    """A Stable Diffusion directory (e.g. SD-1.5) through `StableDiffusionPipeline.from_pretrained`: its UNet trains
    (in `dtype`; on GPUs `trainer=gpu` adds bf16 autocast), fully or, with `lora` ({r, alpha, dropout,
    target_modules}), through a peft LoRA adapter alone; its VAE and CLIP text encoder stay frozen. Training
    noises with a `DDPMScheduler` and sampling steps a `DDIMScheduler`, both from the pipeline's scheduler config."""
    check_dtype(dtype)
    if not name_or_path or not os.path.isfile(os.path.join(name_or_path, "model_index.json")):
        raise ConfigError(f"model.name_or_path: {name_or_path!r} is not a diffusers pipeline directory "
                          f"(no model_index.json)")
    pipeline = StableDiffusionPipeline.from_pretrained(name_or_path, dtype=DTYPES[dtype], safety_checker=None,
                                                       requires_safety_checker=False)
    model = DiffusionModel(pipeline.unet.train(), pipeline.scheduler.config, text_encoder=pipeline.text_encoder,
                           vae=pipeline.vae, tokenizer=pipeline.tokenizer, sample_steps=sample_steps, lora_spec=lora)
    scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    size = pipeline.unet.config.sample_size * scale
    max_length = min(int(pipeline.tokenizer.model_max_length), pipeline.text_encoder.config.max_position_embeddings)
    return model, DiffusionProcessor(size, tokenizer=pipeline.tokenizer, max_length=max_length)


def read_json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)
