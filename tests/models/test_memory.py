"""A model too large for the requested dtype stops before training with an error naming model.dtype."""
import pytest
import torch

from posttrain.models import memory
from posttrain.models.builders import tiny_llama
from posttrain.pipeline import train
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config


def test_weight_bytes_follow_the_dtype_and_the_shards():
    model32, _ = tiny_llama(dtype="float32")
    model16, _ = tiny_llama(dtype="bfloat16")
    assert memory.weight_bytes(model32) == 2 * memory.weight_bytes(model16)
    params = sum(p.numel() for p in model32.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model32.buffers())
    assert memory.weight_bytes(model32) == 4 * params + buffers
    sharded = {id(p) for p in model32.parameters()}
    assert memory.weight_bytes(model32, sharded, shards=4) == pytest.approx(params + buffers, abs=64)


@pytest.mark.parametrize("dtype, fits", [("float32", False), ("bfloat16", True)])
def test_a_model_too_large_for_its_dtype_names_the_key(dtype, fits, tmp_path, monkeypatch):
    model, _ = tiny_llama(dtype="float32")
    # a device between the bfloat16 and the float32 size of the tiny model
    monkeypatch.setattr(memory, "device_memory", lambda device: int(0.75 * memory.weight_bytes(model)))
    cfg = compose_config(["debug=tiny", "trainer.max_epochs=1", f"model.dtype={dtype}"], tmp_path)
    if fits:
        assert train(cfg)["trainer"].global_step == 2
        return
    with pytest.raises(ConfigError, match=r"^model\.dtype: the weights alone take .* in float32, more than"):
        train(cfg)


def test_an_unknown_dtype_names_the_key():
    with pytest.raises(ConfigError, match=r"^model\.dtype: must be one of"):
        tiny_llama(dtype="float8")
    assert next(tiny_llama(dtype="float16")[0].parameters()).dtype == torch.float16
