"""Tiny vision-language models and image examples shared by the processor, generation and model tests."""
from __future__ import annotations

import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaProcessor,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.models.vlm import tiny_vlm
from posttrain.processors import HFImageTokens, VisionProcessor


def tiny_qwen_vl(seed: int = 0):
    """Qwen2.5-VL, smaller than the embedded default so tests stay fast."""
    return tiny_vlm(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vision_depth=2,
                    vision_hidden_size=32, vision_heads=2, seed=seed)


def tiny_llava(seed: int = 0, image_size: int = 32, patch_size: int = 8, any_resolution: bool = False):
    """LLaVA with a CLIP vision tower ("default" strategy: the class token is dropped) over the char tokenizer;
    `any_resolution`: LLaVA-NeXT, which adds tiles of the image at the best of `pinpoints` (token counts vary)."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    pinpoints = [[image_size, 2 * image_size], [2 * image_size, image_size], [2 * image_size, 2 * image_size]]
    config_class = LlavaNextConfig if any_resolution else LlavaConfig
    extra = {"image_grid_pinpoints": pinpoints} if any_resolution else {}
    config = config_class(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=image_size, patch_size=patch_size),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, **special),
        image_token_id=image_id, vision_feature_select_strategy="default", vision_feature_layer=-1, **special, **extra)
    torch.manual_seed(seed)
    model = (LlavaNextForConditionalGeneration if any_resolution else LlavaForConditionalGeneration)(config)
    image_processor = (LlavaNextImageProcessorPil if any_resolution else LlavaImageProcessorPil)(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}, **extra)
    processor_class = LlavaNextProcessor if any_resolution else LlavaProcessor
    hf_processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   image_token="<image>")
    return model, VisionProcessor(tokenizer, image_processor, HFImageTokens(hf_processor, image_id))


def tiny_llava_next(seed: int = 0):
    return tiny_llava(seed, any_resolution=True)


def shape_image(width: int, height: int, colour, box=(0.25, 0.25, 0.75, 0.75)) -> Image.Image:
    """A white image with one filled rectangle: examples differ visibly, so their image features differ."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    x0, y0, x1, y1 = box
    image.paste(colour, (int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)))
    return image


def image_examples() -> list[dict]:
    """Three examples of different prompt lengths and (for Qwen-VL) different image-token counts."""
    return [
        {"image": shape_image(64, 64, (255, 0, 0)), "prompt": "colour?", "response": "red", "index": 0},
        {"image": shape_image(48, 96, (0, 0, 255), (0.1, 0.5, 0.4, 0.9)), "prompt": "how many shapes?",
         "response": "1", "index": 1},
        {"image": shape_image(96, 32, (0, 160, 0)), "prompt": "q", "response": "green", "index": 2},
    ]
