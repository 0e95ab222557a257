"""Diffusion models through diffusers: a conditional UNet with its DDPM training scheduler and DDIM sampling
(`models.py`), LoRA on the UNet through peft (`lora.py`), the conditioning processor, sampling, and image metrics."""
from posttrain.diffusion.models import DiffusionModel, DiffusionProcessor, diffusion_tiny, stable_diffusion

__all__ = ["DiffusionModel", "DiffusionProcessor", "diffusion_tiny", "stable_diffusion"]
