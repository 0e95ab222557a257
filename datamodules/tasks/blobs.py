"""A procedural image task for diffusion models: one coloured shape (circle, square or diamond) on black, with a
random position, size, colour and brightness, conditioned on the shape's name.

Its hidden preference is an image reward (`conf/reward/bright_centred.yaml`: bright, centred, large). The winners
of a class are its images whose reward is above the (1 − winner_share) quantile of that class, as a preference
set's chosen images; the reward itself is used only to select them and to evaluate samples.

Views (`view`): `all` (every training image: a base model's pretraining data), `winners` (the winning images only,
SePPO's data), `pairs` (images of one class paired at random, the higher-reward one chosen: Diffusion-DPO's data).
Held-out splits (val, test) are always the winners of their images: evaluators compare samples with them.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from posttrain.utils.config import check, check_choice

SHAPES = ("circle", "square", "diamond")
VIEWS = ("all", "winners", "pairs")
SUPERSAMPLE = 4  # shapes are drawn at 4x and area-averaged, so small ones keep soft edges


def draw(shape: str, size: int, centre: tuple[float, float], radius: float, colour: np.ndarray) -> np.ndarray:
    """(size, size, 3) uint8: `shape` of `radius` (pixels) at `centre` (pixels) filled with `colour` in [0, 1]."""
    fine = size * SUPERSAMPLE
    coords = (np.arange(fine) + 0.5) / SUPERSAMPLE  # pixel units
    dx, dy = coords[None, :] - centre[0], coords[:, None] - centre[1]  # (fine, fine) each
    if shape == "circle":
        inside = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        inside = np.maximum(np.abs(dx), np.abs(dy)) <= radius * 0.85
    else:
        inside = np.abs(dx) + np.abs(dy) <= radius * 1.2
    coverage = inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3))  # (size, size)
    return np.round(coverage[..., None] * colour[None, None, :] * 255).astype(np.uint8)


class BlobsTask:
    """Args:
        image_size: side of the square RGB images.
        classes: shape names (a subset of circle, square, diamond); the prompt of an image is its class name.
        train_size, val_size, test_size: images generated per split (before selecting winners); val is for
            choosing settings, test for reporting.
        winner_share: the top share of each class by reward that wins.
        reward: the hidden image reward (an object with `score(images) -> (B,)`).
        view: all | winners | pairs (module docstring).
        radius: [min, max] of the shape's radius as a fraction of the side.
        seed: of the generator; the splits draw from separate streams.
    """

    def __init__(self, reward, image_size: int = 16, classes=SHAPES, train_size: int = 2000, val_size: int = 300,
                 test_size: int = 300, winner_share: float = 0.3, view: str = "all", radius=(0.12, 0.4), seed: int = 0):
        check(all(c in SHAPES for c in classes) and len(classes) > 0, "data.task.classes",
              f"must be a non-empty subset of {list(SHAPES)}, got {list(classes)}")
        check(0 < winner_share < 1, "data.task.winner_share", f"must be in (0, 1), got {winner_share}")
        check_choice(view, VIEWS, "data.task.view")
        for key, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            check(size > 1, f"data.task.{key}", f"must be > 1, got {size}")
        check(0 < radius[0] <= radius[1], "data.task.radius", f"must be 0 < min <= max, got {list(radius)}")
        self.reward, self.image_size, self.classes = reward, image_size, list(classes)
        self.winner_share, self.view, self.radius, self.seed = winner_share, view, tuple(radius), seed
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.eval_splits = ("val", "test")
        self._cache: dict[str, list[dict]] = {}

    def examples(self, split: str) -> list[dict]:
        if split not in self.sizes:
            raise KeyError(f"unknown split {split!r}; this task has {sorted(self.sizes)}")
        images = self.images(split)
        winners = [e for e in images if e["winner"]]
        if split != "train" or self.view == "winners":
            return winners
        if self.view == "all":
            return images
        return self.pairs(images)

    def images(self, split: str) -> list[dict]:
        """Every generated image of the split: {"prompt", "image", "reward", "winner", "source"}."""
        if split in self._cache:
            return self._cache[split]
        stream = list(self.sizes).index(split)
        rng = np.random.default_rng([self.seed, stream])
        size, examples = self.image_size, []
        for i in range(self.sizes[split]):
            shape = self.classes[int(rng.integers(len(self.classes)))]
            radius = rng.uniform(*self.radius) * size
            centre = tuple(rng.uniform(radius * 0.6, size - radius * 0.6, size=2))
            colour = rng.uniform(0.1, 1.0, size=3) * rng.uniform(0.3, 1.0)
            pixels = draw(shape, size, centre, radius, colour)
            examples.append({"prompt": shape, "image": Image.fromarray(pixels), "source": f"blobs:{split}:{i}"})
        stacked = torch.stack([torch.from_numpy(np.array(e["image"])) for e in examples])  # (N, H, W, 3)
        rewards = self.reward.score(stacked.permute(0, 3, 1, 2).float() / 127.5 - 1)  # (N,)
        for example, value in zip(examples, rewards.tolist()):
            example["reward"] = value
        for shape in self.classes:
            members = [e for e in examples if e["prompt"] == shape]
            if members:
                threshold = np.quantile([e["reward"] for e in members], 1 - self.winner_share)
                for e in members:
                    e["winner"] = bool(e["reward"] > threshold)
        self._cache[split] = examples
        return examples

    def pairs(self, images: list[dict]) -> list[dict]:
        """Images of one class paired in a seeded random order, the higher-reward one chosen."""
        rng = np.random.default_rng([self.seed, len(self.sizes)])
        pairs = []
        for shape in self.classes:
            members = [images[i] for i in rng.permutation(len(images)) if images[i]["prompt"] == shape]
            for a, b in zip(members[0::2], members[1::2]):
                chosen, rejected = (a, b) if a["reward"] >= b["reward"] else (b, a)
                pairs.append({"prompt": shape, "chosen": chosen["image"], "rejected": rejected["image"],
                              "source": f"{chosen['source']}+{rejected['source']}"})
        order = rng.permutation(len(pairs))
        return [pairs[i] for i in order]
