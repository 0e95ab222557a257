"""The conventional-augmentation control (../shared/methods/emma.md §6, "baseline fairness"): the recorded frames
with colour jitter and random resized crops, as an image-augmentation pipeline of policy training applies them, so
that the generated arms can be compared with an equal number of conventionally augmented samples.

Every image (each view of each frame) gets its own random draw, as torchvision's `ColorJitter` and
`RandomResizedCrop` do when applied to each training image: nothing ties the views or the frames of an episode
together, and the crop moves and scales the scene under the recorded actions (a crop is a geometric change; the
practice keeps it mild). Pure torch, no torchvision; the parameters mean what torchvision's do:

    brightness b, contrast c, saturation s: factors drawn from U[1 − b, 1 + b] (…c, …s), each blending the image
        with black, its mean grey level, its own grey image (factor 1: unchanged)
    hue h: a shift drawn from U[−h, h] of the hue circle (in turns, h ≤ 0.5)
    the four in a random order per image
    crop: area ~ U[scale] of the image, aspect ratio log-uniform in [ratio], at a uniform position (the first of 10
        draws that fits; else the whole image), resized back to H×W bilinearly
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from posttrain.utils.config import check, with_defaults

# Mild, robot-policy-style defaults (a crop keeps at least 80% of the area; colours within ±30% and a tenth of the
# hue circle): what a practitioner adds to a VLA's training images, not a search for the strongest augmentation.
AUGMENTATION = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1, "crop_scale": (0.8, 1.0),
                "crop_ratio": (3 / 4, 4 / 3)}
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, torchvision's rgb_to_grayscale


def augmentation_options(options: dict | None, key: str = "method.augmentation") -> dict:
    """The defaults updated by `options`, each checked (an error names `<key>.<name>`)."""
    options = with_defaults(options, AUGMENTATION, key)
    for name in ("brightness", "contrast", "saturation", "hue"):
        check(is_number(options[name]), f"{key}.{name}", f"must be a number, got {options[name]!r}")
    for name in ("brightness", "contrast", "saturation"):
        check(0 <= options[name] <= 1, f"{key}.{name}", f"must be in [0, 1], got {options[name]}")
    check(0 <= options["hue"] <= 0.5, f"{key}.hue", f"must be in [0, 0.5], got {options['hue']}")
    for name in ("crop_scale", "crop_ratio"):
        pair = options[name]
        check(isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2 and all(map(is_number, pair)),
              f"{key}.{name}", f"must be a pair of numbers [low, high], got {pair!r}")
    low, high = options["crop_scale"]
    check(0 < low <= high <= 1, f"{key}.crop_scale", f"must be [low, high] with 0 < low <= high <= 1, got "
          f"{list(options['crop_scale'])}")
    low, high = options["crop_ratio"]
    check(0 < low <= high, f"{key}.crop_ratio", f"must be [low, high] with 0 < low <= high, got "
          f"{list(options['crop_ratio'])}")
    return {**options, "crop_scale": tuple(options["crop_scale"]), "crop_ratio": tuple(options["crop_ratio"])}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) draws from U[low, high]."""
    return low + (high - low) * torch.rand(n, generator=generator)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    weights = torch.tensor(GREY, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor · images + (1 − factor) · other, clamped to [0, 1]; factor (N,)."""
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(images, grey(images).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(images, grey(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV, hue in turns [0, 1)."""
    r, g, b = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6.0,
                      torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue % 1.0, saturation, value], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_hsv`."""
    hue, saturation, value = hsv.unbind(1)
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype).view(1, 3, 1, 1) + 6.0 * hue.unsqueeze(1)) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)  # (N, 3, H, W)
    return value.unsqueeze(1) - value.unsqueeze(1) * saturation.unsqueeze(1) * ramp


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The hue turned by `shift` (N,) turns; saturation and value kept."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], 1)).clamp(0.0, 1.0)


def color_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.3, contrast: float = 0.3,
                 saturation: float = 0.3, hue: float = 0.1) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes, each image its own factors and its own order.

    Args:
        images: (N, 3, H, W) float in [0, 1].
    Returns: (N, 3, H, W) in [0, 1].
    """
    n = images.shape[0]
    factors = [uniform(n, 1 - brightness, 1 + brightness, generator),
               uniform(n, 1 - contrast, 1 + contrast, generator),
               uniform(n, 1 - saturation, 1 + saturation, generator), uniform(n, -hue, hue, generator)]
    operations = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)  # (N, 4): a permutation per image
    images = images.clone()
    for position in range(4):
        for op, (operation, factor) in enumerate(zip(operations, factors)):
            chosen = order[:, position] == op  # (N,): the images whose `position`-th operation this is
            if chosen.any():
                images[chosen] = operation(images[chosen], factor[chosen])
    return images


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator, scale: tuple[float, float] = (0.8, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """(n, 4) integer boxes (top, left, h, w), torchvision's `RandomResizedCrop.get_params` per image: the first of
    `attempts` draws of area and log-uniform aspect ratio that fits, at a uniform position; none fits: the whole
    image."""
    area = height * width * uniform(n * attempts, *scale, generator).view(n, attempts)
    aspect = torch.exp(uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), generator)).view(n, attempts)
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w >= 1) & (h >= 1) & (w <= width) & (h <= height)  # (n, attempts)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    h = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((n,), height))
    w = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((n,), width))
    top = (torch.rand(n, generator=generator) * (height - h + 1)).floor().long()
    left = (torch.rand(n, generator=generator) * (width - w + 1)).floor().long()
    return torch.stack([top, left, h, w], 1)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box resized back to the image's size, bilinearly: what `F.interpolate(..., align_corners=False)`
    gives on the cropped image (half-pixel centres, the box's edge pixels repeated), for all boxes at once.

    Args:
        images: (N, C, H, W); boxes: (N, 4) integer (top, left, h, w).
    """
    n, _, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)

    def sources(start, size, out):  # (N, out) pixel-index coordinates of the output's samples, inside the box
        centres = (torch.arange(out, dtype=images.dtype) + 0.5).view(1, -1)
        position = start.view(-1, 1) + centres * size.view(-1, 1) / out - 0.5
        return torch.minimum(position.maximum(start.view(-1, 1)), (start + size - 1).view(-1, 1))

    def normalised(position, size):  # grid_sample's align_corners=True coordinates
        return 2.0 * position / max(size - 1, 1) - 1.0

    x = normalised(sources(left, w, width), width)  # (N, W)
    y = normalised(sources(top, h, height), height)  # (N, H)
    grid = torch.stack([x.view(n, 1, width).expand(n, height, width), y.view(n, height, 1).expand(n, height, width)],
                       -1)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def augment_images(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.3, contrast: float = 0.3,
                   saturation: float = 0.3, hue: float = 0.1, crop_scale: tuple[float, float] = (0.8, 1.0),
                   crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """A random resized crop, then colour jitter, a draw per image. (N, 3, H, W) in [0, 1] -> the same."""
    boxes = crop_boxes(images.shape[0], images.shape[2], images.shape[3], generator, crop_scale, crop_ratio)
    return color_jitter(resized_crops(images, boxes), generator, brightness, contrast, saturation, hue)


def conventional_augment(frames: dict[str, np.ndarray], seed: int, **options) -> dict[str, np.ndarray]:
    """Every view's every frame augmented with its own draw (`augment_images`), seeded by `seed`.

    Args:
        frames: per view, (T, H, W, 3) uint8.
        options: `augment_images`' parameters (`augmentation_options` checks them).
    Returns: per view, new (T, H, W, 3) uint8 frames.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for view, video in frames.items():
        images = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
        augmented = augment_images(images, generator, **options)
        out[view] = (augmented * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out
