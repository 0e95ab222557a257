"""Small PIL drawings of an environment's state: lines of text on a plain canvas, as RL4VLM's gym_cards draws its
cards and numbers (their environments are PIL images too)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # a scalable font that ships with Pillow (no files, no network)


def text_image(lines: list[str], size: int) -> np.ndarray:
    """`lines` drawn black on white, one below the other, on a size x size RGB canvas: (size, size, 3) uint8."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    height = size // max(len(lines), 1)
    face = font(fitting_size(draw, lines, size - 4, int(height * 0.8)))
    for row, line in enumerate(lines):
        draw.text((2, row * height), line, fill="black", font=face)
    return np.asarray(image, dtype=np.uint8)


def fitting_size(draw: ImageDraw.ImageDraw, lines: list[str], width: int, largest: int) -> int:
    """The largest font size (at most `largest`) at which every line fits in `width` pixels."""
    for size in range(largest, 5, -1):
        if max(draw.textlength(line, font=font(size)) for line in lines) <= width:
            return size
    return 6
