"""Observations -> the VLA's inputs, shared by the robot DataModule's collator and the closed-loop evaluator: the
planner's prompt (its image and instruction ⊕ spatial prompt, left-padded, through the VLM processor), the camera
views as one tensor and the normalised proprioceptive state."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from posttrain.processors.text import left_pad


def views_tensor(views: Sequence[Sequence[np.ndarray]]) -> torch.Tensor:
    """Per row, its views as uint8 (H, W, 3) arrays (all of one size) -> (B, V, 3, H, W) float in [0, 1]."""
    stacked = np.stack([np.stack(list(row)) for row in views])  # (B, V, H, W, 3)
    return torch.from_numpy(stacked).permute(0, 1, 4, 2, 3).float() / 255.0


def robot_inputs(processor, prompts: Sequence[str], images: Sequence[Image.Image], views: torch.Tensor,
                 state: torch.Tensor) -> dict:
    """{"prompt_input_ids", "prompt_attention_mask" (B, P), "image_inputs", "views" (B, V, 3, H, W),
    "state" (B, S)}: what `VLAModel.condition` and `VLAModel.act` take."""
    ids, image_inputs = processor.encode_prompts([{"prompt": p, "image": im} for p, im in zip(prompts, images)])
    batch = left_pad(ids, processor.pad_id)
    batch.update({"image_inputs": image_inputs, "views": views, "state": state})
    return batch
