"""make_processor turns a builder's second output into the data's processor, for text and image models alike."""
import pytest

from posttrain.models import build_char_tokenizer
from posttrain.processors import TextProcessor, VisionProcessor, make_processor
from posttrain.utils.config import ConfigError
from tests.vlm import tiny_qwen_vl


def test_a_tokenizer_becomes_a_text_processor():
    processor = make_processor(build_char_tokenizer(), 64, "Q:{prompt}=")
    assert type(processor) is TextProcessor and processor.max_length == 64
    assert processor.decode([processor.prompt("1+1")]) == ["Q:1+1="]
    assert processor.training_padding == "right" and processor.prompt_padding == "left"


def test_a_vision_processor_takes_the_datas_settings():
    _, built = tiny_qwen_vl()
    processor = make_processor(built, 64, "Q:{prompt}=")
    assert type(processor) is VisionProcessor and processor.max_length == 64
    assert processor.prompt_template == "{image}Q:{prompt}="  # a text task's template: the image goes first
    assert make_processor(built, 64, "Q:{prompt}{image}=").prompt_template == "Q:{prompt}{image}="
    assert processor.image_processor is built.image_processor


def test_a_template_without_prompt_is_named():
    with pytest.raises(ConfigError, match="data.prompt_template"):
        make_processor(build_char_tokenizer(), 64, "no slot")
