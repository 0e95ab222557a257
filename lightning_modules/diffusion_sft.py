"""Denoising training of a diffusion model: pretraining a base model on all images, or SFT on winning images only
(SFT^w, SePPO's baseline)."""
from __future__ import annotations

import torch

from lightning_modules.base import PostTrainModule
from posttrain.losses.diffusion import denoising_loss


def noised(model, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, ε, t) with t ~ U{0..T−1} and ε ~ N(0, I) per row, from the global generator (seeded per stage)."""
    timesteps = torch.randint(0, model.num_timesteps, (x0.shape[0],), device=x0.device)  # (B,)
    noise = torch.randn_like(x0)  # (B, C, H, W)
    return model.add_noise(x0, noise, timesteps), noise, timesteps


class DiffusionSFTModule(PostTrainModule):
    """The simple DDPM loss on the batch's images (`pixels`) given their prompts; the evaluator samples."""

    def __init__(self, model, tokenizer, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])

    def training_step(self, batch, batch_idx):
        x0 = self.model.to_latents(batch["pixels"])  # (B, C, h, w)
        inputs = self.model.unet_inputs(condition(batch))
        x_t, noise, timesteps = noised(self.model, x0)
        target = self.model.target(x0, noise, timesteps)  # (B, C, H, W) ε, v or x_0
        loss, metrics = denoising_loss(self.model.predict(x_t, timesteps, inputs), target)
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=x0.shape[0])
        return loss


def condition(batch: dict) -> dict[str, torch.Tensor]:
    """The batch's conditioning tensors (class labels or token ids), as the processor made them."""
    return {k: batch[k] for k in ("class_labels", "input_ids") if k in batch}
