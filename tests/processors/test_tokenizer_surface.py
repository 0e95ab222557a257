"""A processor stands in for a tokenizer where a module reads one (a VLM's builder returns its processor): the same
special-token ids, vocabulary size and decoding as the tokenizer inside it."""
import pytest

from posttrain.models.tokenizer import build_char_tokenizer
from posttrain.processors import TextProcessor, make_processor
from tests.vlm import tiny_qwen_vl


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_processor_has_the_tokenizer_surface_modules_read(kind):
    if kind == "text":
        processor = TextProcessor(build_char_tokenizer(), max_length=32)
    else:
        processor = make_processor(tiny_qwen_vl()[1], 64)
    tokenizer = processor.tokenizer
    assert (processor.pad_token_id, processor.eos_token_id, processor.bos_token_id) == (
        tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert processor.pad_token_id is not None and processor.eos_token_id is not None
    assert len(processor) == len(tokenizer)
    ids = [processor.text("red") + [processor.eos_token_id], processor.text("blue")]
    assert processor.batch_decode(ids, skip_special_tokens=True) == processor.decode(ids) == ["red", "blue"]
    assert processor.batch_decode(ids, skip_special_tokens=False)[0] != "red"  # the eos token is kept
