"""Vision-language model builders named by `conf/model/vlm_tiny.yaml` and `conf/model/hf_vlm.yaml`.

Each returns `(model, processor)`: the model and a `VisionProcessor` (image processor + tokenizer + the family's
image-token expansion), which `posttrain.processors.make_processor` configures with the data's settings.
"""
from __future__ import annotations

import os

import torch
import transformers
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from posttrain.models.builders import DTYPES, check_dtype, check_fusable_head, ensure_pad_token
from posttrain.models.multimodal import rope_model
from posttrain.models.tokenizer import build_vision_char_tokenizer
from posttrain.processors.vision import HFImageTokens, QwenImageTokens, VisionProcessor
from posttrain.utils.config import ConfigError, check


def mrope_section(head_dim: int) -> list[int]:
    """How the rotary frequencies of a head split over (time, height, width): Qwen2.5-VL's 1/4, 3/8, 3/8."""
    half = head_dim // 2
    time = half // 4
    height = (half - time) // 2
    return [time, height, half - time - height]


def tiny_vlm(
    hidden_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 512,
    vision_depth: int = 2,
    vision_hidden_size: int = 64,
    vision_heads: int = 4,
    patch_size: int = 8,
    merge_size: int = 2,
    image_size: int = 64,
    max_position_embeddings: int = 512,
    seed: int = 0,
    name_or_path: str | None = None,
    fused_lm_head: bool = False,
    dtype: str = "float32",
):
    """A small Qwen2.5-VL with seeded random init over the character tokenizer plus Qwen's vision tokens, its
    parameters in `dtype`.

    Images are resized to about `image_size`² pixels, so a square image gives (image_size / patch_size / merge_size)²
    image tokens (16 at the defaults). `name_or_path`, when given, loads a saved model and processor instead.
    """
    check_dtype(dtype)
    if name_or_path:
        return vlm_from_pretrained(name_or_path, dtype=dtype, fused_lm_head=fused_lm_head)
    check(hidden_size % num_heads == 0, "model.hidden_size", f"must be divisible by model.num_heads={num_heads}")
    check(image_size % (patch_size * merge_size) == 0, "model.image_size",
          f"must be a multiple of model.patch_size * model.merge_size = {patch_size * merge_size}")
    tokenizer = build_vision_char_tokenizer(model_max_length=max_position_embeddings)
    start, end, image, video = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>",
                                                                 "<|image_pad|>", "<|video_pad|>"])
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                max_position_embeddings=max_position_embeddings, tie_word_embeddings=False, attention_dropout=0.0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": mrope_section(hidden_size // num_heads)}, **special)
    vision = dict(depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                  num_heads=vision_heads, patch_size=patch_size, spatial_merge_size=merge_size, temporal_patch_size=2,
                  out_hidden_size=hidden_size, window_size=image_size, fullatt_block_indexes=[vision_depth - 1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, vision_start_token_id=start,
                              vision_end_token_id=end, image_token_id=image, video_token_id=video,
                              tie_word_embeddings=False, **special)
    config.fused_lm_head = fused_lm_head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(DTYPES[dtype])
    image_processor = Qwen2VLImageProcessorPil(min_pixels=image_size**2, max_pixels=image_size**2,
                                               patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2)
    return model, VisionProcessor(tokenizer, image_processor, QwenImageTokens(start, image, end, merge_size))


def vlm_from_pretrained(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False,
                        fused_lm_head: bool = False):
    """Any local image-text-to-text checkpoint (Qwen2/2.5-VL, LLaVA, LLaVA-NeXT, ...) with its image processor and
    tokenizer. (Qwen-VL's own processor class needs torchvision; the image-token expansion is done here instead.)"""
    check_dtype(dtype)
    if not name_or_path or not os.path.isdir(name_or_path):
        raise ConfigError(f"model.name_or_path: {name_or_path!r} is not a local directory (model=hf_vlm needs one)")
    try:
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.name_or_path: {name_or_path} has no image processor (preprocessor_config.json); "
                          "model=hf_vlm needs an image-text-to-text checkpoint (for a text model use model=hf)"
                          ) from err
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=DTYPES[dtype],
                                                        trust_remote_code=trust_remote_code)
    ensure_pad_token(model, tokenizer)
    if fused_lm_head:
        check_fusable_head(model)
    model.config.fused_lm_head = fused_lm_head
    return model, VisionProcessor(tokenizer, image_processor, image_tokens_of(model, name_or_path, image_processor,
                                                                              tokenizer))


def image_tokens_of(model, directory: str, image_processor, tokenizer):
    """The rule that turns one processed image into its placeholder tokens, for the model's family."""
    config = model.config
    if rope_model(model) is not None:  # Qwen2/2.5-VL
        return QwenImageTokens(config.vision_start_token_id, config.image_token_id, config.vision_end_token_id,
                               image_processor.merge_size)
    image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
    try:
        hf_processor = AutoProcessor.from_pretrained(directory)
    except (OSError, ValueError, TypeError, ImportError):
        hf_processor = None
    if getattr(hf_processor, "patch_size", None) is None:  # no processor_config.json: settings from the model
        name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
        if name is None or not hasattr(transformers, name):
            raise ConfigError(f"model.name_or_path: {directory} is a {config.model_type!r} model, whose image-token "
                              "count posttrain does not know (supported: Qwen2/2.5-VL, LLaVA, LLaVA-NeXT)")
        has_cls = "clip" in config.vision_config.model_type  # CLIP-family towers prepend a class token
        hf_processor = getattr(transformers, name)(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy, image_token=image_token,
            num_additional_image_tokens=int(has_cls))
    if not hasattr(hf_processor, "replace_image_token"):
        raise ConfigError(f"model.name_or_path: {directory} is a {config.model_type!r} model, whose image-token "
                          "count posttrain does not know (supported: Qwen2/2.5-VL, LLaVA, LLaVA-NeXT)")
    return HFImageTokens(hf_processor, config.image_token_id)


def load_saved(directory: str):
    """A directory written by `posttrain.models.save`: a VLM (it has an image processor) or a causal LM, with its
    processor or tokenizer."""
    if os.path.isfile(os.path.join(directory, "preprocessor_config.json")):
        return vlm_from_pretrained(directory)
    from posttrain.models.builders import from_pretrained

    return from_pretrained(directory)
