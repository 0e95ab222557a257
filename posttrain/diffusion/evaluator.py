"""The evaluator of diffusion methods (`method.evaluator`): samples one image per held-out example's prompt and
scores the samples against the split's winning images.

Metrics per split: `reward` (mean hidden reward of the samples, the analogue of PickScore), `reward_winners` (of
the split's real winners, the level to reach), `mmd` (kernel MMD² between the samples' and the winners' small pixel
features: fidelity and diversity together; collapse onto one mode raises it), `class_reward_min` (the lowest
per-prompt mean reward, so a method that gives up a class shows). A grid of samples above the winners of the first
batch goes to TensorBoard at every evaluation (`log_media`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from posttrain.diffusion.metrics import kernel_mmd2, pixel_features
from posttrain.evaluators import write_image_grids
from posttrain.utils.config import check

GRID_COLUMNS = 16


def image_grid(rows: Sequence[torch.Tensor], pad: int = 1) -> torch.Tensor:
    """(3, H', W') in [0, 1]: each (N, 3, S, S) tensor in [-1, 1] one row of the grid (at most GRID_COLUMNS)."""
    size = rows[0].shape[-1]
    width = GRID_COLUMNS * (size + pad) + pad
    grid = torch.ones(3, len(rows) * (size + pad) + pad, width)
    for r, images in enumerate(rows):
        for c, image in enumerate(images[:GRID_COLUMNS]):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            grid[:, top : top + size, left : left + size] = (image.float().cpu() + 1) / 2
    return grid


class DiffusionEvaluator(nn.Module):
    """Args:
        reward: the hidden image reward (`score(images) -> (B,)`); scores samples only.
        sample_steps: DDIM steps per sample; None = the model's `sample_steps`.
        feature_size: side of the area-averaged pixel features the MMD compares.
    """

    def __init__(self, reward, sample_steps: int | None = None, feature_size: int = 8):
        super().__init__()
        check(sample_steps is None or sample_steps > 0, "method.evaluator.sample_steps",
              f"must be > 0 or null, got {sample_steps}")
        self.reward, self.sample_steps, self.feature_size = reward, sample_steps, feature_size
        self.splits: tuple[str, ...] = ()
        self.reset()

    def setup(self, splits: Sequence[str], tokenizer=None, is_correct=None) -> None:
        self.splits = tuple(splits)
        self.reset()

    def reset(self) -> None:
        self.seen: dict[str, dict[str, list]] = {}
        self.grids: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        """Samples one image per row's prompt from noise seeded by `seed` (the batch's position: every evaluation and
        every method draws the same noise) and keeps what `compute` needs."""
        winners = batch["pixels"] if "pixels" in batch else batch["chosen_pixels"]  # (B, 3, S, S)
        condition = {k: batch[k] for k in ("class_labels", "input_ids") if k in batch}
        generator = torch.Generator(device=winners.device).manual_seed(seed)
        samples = model.sample(condition, generator=generator, steps=self.sample_steps)  # (B, 3, S, S)
        seen = self.seen.setdefault(split, {"reward": [], "winner": [], "samples": [], "winners": [], "prompts": []})
        seen["reward"].append(self.reward.score(samples).cpu())
        seen["winner"].append(self.reward.score(winners).cpu())
        seen["samples"].append(pixel_features(samples, self.feature_size).cpu())
        seen["winners"].append(pixel_features(winners, self.feature_size).cpu())
        seen["prompts"] += list(batch["prompts"])
        if split not in self.grids:
            self.grids[split] = image_grid([samples, winners])

    def compute(self) -> dict[str, torch.Tensor]:
        """`<split>/<metric>` of every split that saw data; resets. (Single-process: the MMD needs every sample.)"""
        results = {}
        for split, seen in self.seen.items():
            rewards = torch.cat(seen["reward"])  # (N,)
            by_prompt = {}
            for prompt, value in zip(seen["prompts"], rewards.tolist()):
                by_prompt.setdefault(prompt, []).append(value)
            results[f"{split}/reward"] = rewards.mean()
            results[f"{split}/reward_winners"] = torch.cat(seen["winner"]).mean()
            results[f"{split}/class_reward_min"] = torch.tensor(min(sum(v) / len(v) for v in by_prompt.values()))
            results[f"{split}/mmd"] = kernel_mmd2(torch.cat(seen["samples"]), torch.cat(seen["winners"]))
        self.seen = {}
        return results

    def log_media(self, loggers, step: int) -> None:
        """The grids of the last evaluation (samples above winners) to every TensorBoard logger."""
        write_image_grids(loggers, self.grids, "samples", step)
        self.grids = {}
