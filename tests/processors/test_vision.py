"""VisionProcessor batches are what the models expect: one placeholder per image feature, images with their rows."""
import pytest
import torch

from posttrain.models.forward import IGNORE_INDEX
from posttrain.processors import PairCollator, SFTCollator, TextProcessor, VisionProcessor, make_processor
from posttrain.utils.config import ConfigError
from tests.vlm import image_examples, shape_image, tiny_llava, tiny_qwen_vl


def qwen_batch(template="{image}{prompt}", max_length=128):
    model, processor = tiny_qwen_vl()
    processor = make_processor(processor, max_length, template)
    return model, processor, SFTCollator(processor, with_prompts=True)(image_examples())


def test_qwen_placeholders_match_the_image_grid():
    model, processor, batch = qwen_batch()
    images = batch["image_inputs"]
    grids = images.tensors["image_grid_thw"]  # (3, 3)
    counts = (batch["input_ids"] == model.config.image_token_id).sum(-1)  # (B,)
    assert counts.tolist() == (grids.prod(-1) // 4).tolist()
    assert counts[0] == 16  # a 64x64 image: 8x8 patches of 8 pixels, merged 2x2
    assert images.sizes["pixel_values"] == grids.prod(-1).tolist()
    prompt_counts = (batch["prompt_input_ids"] == model.config.image_token_id).sum(-1)
    assert torch.equal(prompt_counts, counts)
    # the block is wrapped by vision start/end, right after bos, and never enters the loss
    row = batch["input_ids"][0].tolist()
    start = model.config.vision_start_token_id
    assert row[:2] == [processor.bos[0], start] and row[2 + 16] == model.config.vision_end_token_id
    assert (batch["labels"][batch["input_ids"] == model.config.image_token_id] == IGNORE_INDEX).all()


def test_llava_placeholders_match_the_vision_tower():
    model, processor = tiny_llava()
    processor = make_processor(processor, 128, "{prompt}")
    batch = SFTCollator(processor)(image_examples())
    images = batch["image_inputs"]
    assert images.tensors["pixel_values"].shape == (3, 3, 32, 32)
    counts = (batch["input_ids"] == model.config.image_token_id).sum(-1)
    assert counts.tolist() == [16, 16, 16]  # (32 / 8)^2 patches; CLIP's class token dropped by "default"
    with torch.no_grad():
        features = model.get_image_features(pixel_values=images.tensors["pixel_values"])
    assert sum(f.shape[0] for f in features.pooler_output) == counts.sum()


def test_template_places_the_image_and_text_rows_have_none():
    model, processor = tiny_qwen_vl()
    processor = make_processor(processor, 128, "Q:{prompt}{image}A:")
    examples = image_examples()
    del examples[1]["image"]
    batch = SFTCollator(processor, with_prompts=True)(examples)
    images = batch["image_inputs"]
    assert images.sizes["image_grid_thw"] == [1, 0, 1]
    counts = (batch["input_ids"] == model.config.image_token_id).sum(-1)
    assert counts[1] == 0 and counts[0] == 16
    text = processor.tokenizer.decode(batch["prompt_input_ids"][1][batch["prompt_attention_mask"][1].bool()])
    assert text == "<bos>Q:how many shapes?A:"
    first = processor.tokenizer.decode(batch["input_ids"][0, :6])
    assert first == "<bos>Q:col"


def test_pairs_share_the_prompts_images():
    model, processor = tiny_qwen_vl()
    processor = make_processor(processor, 128, "{prompt}")
    examples = [{"image": shape_image(64, 64, (255, 0, 0)), "prompt": "colour?", "chosen": "red", "rejected": "blue",
                 "index": 0}]
    batch = PairCollator(processor)(examples)
    image_id = model.config.image_token_id
    assert len(batch["image_inputs"]) == 1
    assert (batch["chosen_input_ids"] == image_id).sum() == (batch["rejected_input_ids"] == image_id).sum() == 16


def test_bad_inputs_are_named():
    _, processor = tiny_qwen_vl()
    with pytest.raises(ConfigError, match="data.max_length"):  # cutting the prompt would cut image tokens
        SFTCollator(make_processor(processor, 16, "{prompt}"))(image_examples())
    with pytest.raises(ConfigError, match="data.prompt_template"):
        VisionProcessor(processor.tokenizer, processor.image_processor, processor.image_tokens,
                        prompt_template="{image}{prompt}{image}")
    text = TextProcessor(processor.tokenizer)
    with pytest.raises(ConfigError, match="model: the data has images"):
        SFTCollator(text)(image_examples())


def test_decode_drops_special_tokens():
    _, processor = tiny_qwen_vl()
    ids = processor.prompt("hi") + processor.response("ok")
    assert processor.decode([ids]) == ["hiok"]
