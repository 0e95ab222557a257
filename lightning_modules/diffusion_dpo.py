"""Diffusion-DPO (Wallace et al., CVPR 2024): DPO on preference pairs of images, through denoising errors."""
from __future__ import annotations

import torch

from lightning_modules.base import PostTrainModule
from lightning_modules.diffusion_sft import condition
from posttrain.losses.diffusion import denoising_error, diffusion_dpo_loss
from posttrain.utils.config import check


class DiffusionDPOModule(PostTrainModule):
    """Args:
        beta: β of L_DiffDPO (> 0); the loss scales the error differences by β T (ω = 1), T the model's steps.
    The reference ε_ref is the start UNet: a frozen copy (rebuilt from the start model on resume), or with
    `model.lora` the same UNet with its adapter disabled (no second UNet in memory)."""

    def __init__(self, model, tokenizer, beta: float = 1.0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(beta > 0, "method.beta", f"must be > 0, got {beta}")
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.beta = beta
        self.add_frozen("reference", model.frozen_reference(start=True), rebuildable=True)

    def training_step(self, batch, batch_idx):
        model = self.model
        chosen = model.to_latents(batch["chosen_pixels"])  # (B, C, h, w)
        rejected = model.to_latents(batch["rejected_pixels"])  # (B, C, h, w)
        pairs = chosen.shape[0]
        timesteps = torch.randint(0, model.num_timesteps, (pairs,), device=chosen.device).repeat(2)  # (2B,) shared
        noise = torch.randn((2 * pairs, *chosen.shape[1:]), device=chosen.device)  # (2B, C, h, w) ε^w then ε^l
        x0 = torch.cat([chosen, rejected])  # (2B, C, h, w)
        x_t = model.add_noise(x0, noise, timesteps)  # (2B, C, h, w)
        target = model.target(x0, noise, timesteps)  # (2B, C, h, w) ε, v or x_0
        inputs = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in model.unet_inputs(condition(batch)).items()}
        errors = denoising_error(model.predict(x_t, timesteps, inputs), target)  # (2B,)
        with torch.no_grad():
            ref_errors = denoising_error(model.predict(x_t, timesteps, inputs, unet=self.reference), target)
        loss, metrics = diffusion_dpo_loss(errors[:pairs], ref_errors[:pairs], errors[pairs:], ref_errors[pairs:],
                                           beta=self.beta, num_timesteps=model.num_timesteps)
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=pairs)
        return loss
