"""model=vlm_tiny and model=hf_vlm: the tiny Qwen2.5-VL default, saved and loaded back, and a saved LLaVA."""
import json
import os

import pytest
import torch
from hydra.utils import instantiate
from transformers import Qwen2_5_VLForConditionalGeneration

from posttrain.models import save
from posttrain.models.forward import label_logprobs
from posttrain.models.vlm import load_saved, vlm_from_pretrained
from posttrain.processors import SFTCollator, VisionProcessor, make_processor
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config
from tests.vlm import image_examples, tiny_llava, tiny_llava_next, tiny_qwen_vl


def batch_of(processor):
    return SFTCollator(make_processor(processor, 128, "{prompt}"))(image_examples())


def scores(model, batch):
    with torch.no_grad():
        return label_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                              image_inputs=batch["image_inputs"])[0]


def test_vlm_tiny_is_a_small_qwen25_vl(tmp_path):
    cfg = compose_config(["model=vlm_tiny"], tmp_path)
    model, processor = instantiate(cfg.model)
    assert type(model) is Qwen2_5_VLForConditionalGeneration and isinstance(processor, VisionProcessor)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 5e6
    batch = batch_of(processor)
    assert (batch["input_ids"][0] == model.config.image_token_id).sum() == 16  # 64x64 image
    again, _ = instantiate(cfg.model)  # seeded: the same weights every time
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_saved_tiny_vlm_loads_back_the_same(tmp_path):
    model, processor = tiny_qwen_vl(seed=2)
    save(model, processor, str(tmp_path / "vlm"))
    cfg = compose_config(["model=hf_vlm", f"model.name_or_path={tmp_path / 'vlm'}"], tmp_path / "run")
    loaded, loaded_processor = instantiate(cfg.model)
    assert type(loaded) is Qwen2_5_VLForConditionalGeneration
    batch, loaded_batch = batch_of(processor), batch_of(loaded_processor)
    assert torch.equal(batch["input_ids"], loaded_batch["input_ids"])
    pixels = loaded_batch["image_inputs"].tensors["pixel_values"]
    assert torch.equal(batch["image_inputs"].tensors["pixel_values"], pixels)
    assert torch.allclose(scores(model, batch), scores(loaded, loaded_batch), atol=1e-6)
    assert type(load_saved(str(tmp_path / "vlm"))[0]) is Qwen2_5_VLForConditionalGeneration


@pytest.mark.parametrize("build", [tiny_llava, tiny_llava_next])
def test_hf_vlm_loads_a_saved_llava(build, tmp_path):
    """Saved without a processor_config.json: the image-token count comes from the model's config."""
    model, processor = build(seed=3)
    save(model, processor, str(tmp_path / "llava"))
    assert not os.path.exists(tmp_path / "llava" / "processor_config.json")
    loaded, loaded_processor = vlm_from_pretrained(str(tmp_path / "llava"))
    assert type(loaded) is type(model)
    batch, loaded_batch = batch_of(processor), batch_of(loaded_processor)
    assert torch.equal(batch["input_ids"], loaded_batch["input_ids"])
    counts = (loaded_batch["input_ids"] == loaded.config.image_token_id).sum(-1)  # (B,)
    with torch.no_grad():  # as many placeholders as the vision tower yields features
        features = loaded.get_image_features(**loaded_batch["image_inputs"].tensors).pooler_output
    assert counts.tolist() == [f.shape[0] for f in features]
    if build is tiny_llava:
        assert counts.tolist() == [16, 16, 16]
    else:  # LLaVA-NeXT: base tile + unpadded tiles + row separators, by aspect ratio
        assert len(set(counts.tolist())) == 3
    assert torch.allclose(scores(model, batch), scores(loaded, loaded_batch), atol=1e-6)


def test_a_directory_without_an_image_processor_is_named(tmp_path):
    model, processor = tiny_qwen_vl()
    save(model, processor.tokenizer, str(tmp_path / "text_only"))
    assert not os.path.exists(tmp_path / "text_only" / "preprocessor_config.json")
    cfg = compose_config(["model=hf_vlm", f"model.name_or_path={tmp_path / 'text_only'}"], tmp_path / "run")
    with pytest.raises(Exception, match=rf"model.name_or_path: {tmp_path / 'text_only'} has no image processor"):
        instantiate(cfg.model)  # hydra wraps the ConfigError
    with pytest.raises(ConfigError, match="has no image processor"):
        vlm_from_pretrained(str(tmp_path / "text_only"))
    with pytest.raises(ConfigError, match="model.name_or_path"):
        vlm_from_pretrained(str(tmp_path / "missing"))


def test_fused_lm_head_sees_the_images():
    """The fused path runs the whole multimodal backbone (not the language model alone) and the same vocabulary."""
    model, processor = tiny_qwen_vl(seed=4)
    batch = batch_of(processor)
    plain = scores(model, batch)
    model.config.fused_lm_head = True
    assert torch.allclose(scores(model, batch), plain, atol=1e-5)


def test_saved_config_records_the_vision_tokens(tmp_path):
    model, processor = tiny_qwen_vl()
    save(model, processor, str(tmp_path))
    config = json.load(open(tmp_path / "config.json"))
    vocab = processor.tokenizer.get_vocab()
    assert config["image_token_id"] == vocab["<|image_pad|>"]
    assert config["vision_start_token_id"] == vocab["<|vision_start|>"]
