"""The image+text processor: an image processor, a tokenizer and the model's image-token expansion.

Each image becomes a block of placeholder tokens in the prompt, as many as the vision tower yields features for it;
the model swaps the placeholders for those features. The count is the model family's rule (`ImageTokens`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from posttrain.processors.images import ImageInputs
from posttrain.processors.text import TextProcessor
from posttrain.utils.config import ConfigError


class QwenImageTokens:
    """Qwen2-VL / Qwen2.5-VL: `<|vision_start|>`, grid_t·grid_h·grid_w / merge² `<|image_pad|>`, `<|vision_end|>`."""

    def __init__(self, start_id: int, placeholder_id: int, end_id: int, merge_size: int):
        self.start_id, self.placeholder_id, self.end_id, self.merge_size = start_id, placeholder_id, end_id, merge_size

    def __call__(self, image: dict[str, torch.Tensor]) -> list[int]:
        count = int(image["image_grid_thw"].prod()) // self.merge_size**2
        return [self.start_id] + [self.placeholder_id] * count + [self.end_id]


class HFImageTokens:
    """LLaVA, LLaVA-NeXT, ...: the count from transformers' own processor of the family (`replace_image_token`,
    which knows CLS tokens, the feature-selection strategy and LLaVA-NeXT's any-resolution tiles)."""

    def __init__(self, hf_processor, placeholder_id: int):
        self.hf_processor, self.placeholder_id = hf_processor, placeholder_id

    def __call__(self, image: dict[str, torch.Tensor]) -> list[int]:
        block = self.hf_processor.replace_image_token(image, 0)
        return [self.placeholder_id] * (len(block) // len(self.hf_processor.image_token))


class VisionProcessor(TextProcessor):
    """Examples `{"image": PIL image, "prompt", ...}` -> prompt ids with the image's placeholder block, and the
    image tensors the model needs (`ImageInputs`). Examples without "image" are text-only rows.

    Args:
        tokenizer: the model's tokenizer (it knows the placeholder tokens).
        image_processor: the model's image processor (a transformers `*ImageProcessor*`).
        image_tokens: callable, one image's processed tensors -> the token ids standing for it in the prompt.
        prompt_template: must contain {prompt} and {image} (where the image block goes).
    """

    def __init__(self, tokenizer, image_processor, image_tokens, max_length: int = 256,
                 prompt_template: str = "{image}{prompt}"):
        if prompt_template.count("{image}") != 1:
            raise ConfigError(f"data.prompt_template: needs exactly one '{{image}}' for an image model, "
                              f"got {prompt_template!r}")
        super().__init__(tokenizer, max_length, prompt_template)
        self.image_processor, self.image_tokens = image_processor, image_tokens

    def configured(self, max_length: int, prompt_template: str) -> "VisionProcessor":
        if "{image}" not in prompt_template:  # a text task's template: the image goes first
            prompt_template = "{image}" + prompt_template
        return VisionProcessor(self.tokenizer, self.image_processor, self.image_tokens, max_length, prompt_template)

    def image(self, image) -> dict[str, torch.Tensor]:
        """One PIL image -> its tensors, keyed like the model's kwargs (dim 0 = this image's entries)."""
        return dict(self.image_processor(images=[image.convert("RGB")], return_tensors="pt"))

    def prompt(self, text: str, image: dict[str, torch.Tensor] | None = None) -> list[int]:
        """`[bos] template` with the image's placeholder block at {image} (nothing there without an image)."""
        before, after = self.prompt_template.split("{image}")
        block = self.image_tokens(image) if image is not None else []
        return self.bos + self.text(before.format(prompt=text)) + block + self.text(after.format(prompt=text))

    def encode_prompts(self, examples: Sequence[dict]) -> tuple[list[list[int]], ImageInputs | None]:
        """Prompt ids with placeholder blocks, and the image inputs of the rows (None if no row has an image)."""
        images = [self.image(e["image"]) if e.get("image") is not None else {} for e in examples]
        prompts = [self.prompt(e["prompt"], image or None) for e, image in zip(examples, images)]
        for ids, image in zip(prompts, images):
            if image and len(ids) >= self.max_length:
                raise ConfigError(f"data.max_length: {self.max_length} leaves no room for a response after an image "
                                  f"prompt of {len(ids)} tokens (cutting it would drop image tokens)")
        return prompts, (ImageInputs.from_examples(images) if any(images) else None)

    def save_pretrained(self, directory: str) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
