"""Image rewards: scores of images rather than of text completions, for diffusion models.

The built-in one is the procedural image task's hidden preference. It is used to pick the task's winning images
and to evaluate samples; no method optimises it directly.
"""
from __future__ import annotations

import torch


class BrightCentredReward:
    """r(x) = Σ_p lum(x_p) · w_p / Σ_p w_p with w_p = exp(−‖p − centre‖² / (2 (σ·S)²)): the luminance of the image
    under a centred Gaussian window of width σ times the side S. Bright, centred and large shapes score high.

    Images are (B, 3, H, W) in [-1, 1] (the models' range); luminance is the Rec. 601 weighting of RGB in [0, 1], so
    r ∈ [0, 1].
    """

    LUMA = (0.299, 0.587, 0.114)

    def __init__(self, sigma: float = 0.25):
        self.sigma = sigma

    def window(self, height: int, width: int, device) -> torch.Tensor:
        ys = (torch.arange(height, device=device) + 0.5) / height - 0.5  # (H,)
        xs = (torch.arange(width, device=device) + 0.5) / width - 0.5  # (W,)
        squared = ys[:, None] ** 2 + xs[None, :] ** 2  # (H, W)
        window = torch.exp(-squared / (2 * self.sigma**2))
        return window / window.sum()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) rewards of (B, 3, H, W) images in [-1, 1]."""
        rgb = (images.float().clamp(-1, 1) + 1) / 2  # (B, 3, H, W)
        luma = torch.tensor(self.LUMA, device=images.device).view(1, 3, 1, 1)
        luminance = (rgb * luma).sum(1)  # (B, H, W)
        return (luminance * self.window(*images.shape[-2:], images.device)).sum((-2, -1))

    def __call__(self, example: dict, image: torch.Tensor) -> float:
        """The reward of one (3, H, W) image; `example` (its prompt) does not change it."""
        return float(self.score(image[None])[0])
