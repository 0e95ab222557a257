"""ImageInputs keep each row's images through selection, repetition, concatenation and device moves."""
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from posttrain.processors import ImageInputs


def qwen_like() -> ImageInputs:
    """Three rows: row 0 has 4 patches (1 image), row 1 none (text only), row 2 has 2 patches (1 image)."""
    patches = torch.arange(6 * 2, dtype=torch.float32).view(6, 2)  # (6, 2) patch features, row-major by example
    return ImageInputs.from_examples([
        {"pixel_values": patches[:4], "image_grid_thw": torch.tensor([[1, 2, 2]])},
        {},
        {"pixel_values": patches[4:], "image_grid_thw": torch.tensor([[1, 1, 2]])},
    ])


def test_from_examples_concatenates_in_row_order():
    images = qwen_like()
    assert len(images) == 3 and not images.empty
    assert images.sizes == {"image_grid_thw": [1, 0, 1], "pixel_values": [4, 0, 2]}
    assert images.tensors["pixel_values"].shape == (6, 2)
    assert images.tensors["image_grid_thw"].tolist() == [[1, 2, 2], [1, 1, 2]]


def test_select_keeps_each_rows_own_entries():
    images = qwen_like()
    picked = images.select(torch.tensor([2, 0, 2]))
    assert picked.sizes == {"image_grid_thw": [1, 1, 1], "pixel_values": [2, 4, 2]}
    assert picked.tensors["pixel_values"][:, 0].tolist() == [8, 10, 0, 2, 4, 6, 8, 10]
    assert picked.tensors["image_grid_thw"].tolist() == [[1, 1, 2], [1, 2, 2], [1, 1, 2]]
    assert images.select([1]).empty


def test_repeat_interleave_matches_the_rows_of_a_repeated_batch():
    images = qwen_like()
    repeated = images.repeat_interleave(2)
    assert len(repeated) == 6
    assert repeated.sizes["pixel_values"] == [4, 4, 0, 0, 2, 2]
    first, second = repeated.select([0]), repeated.select([1])
    assert torch.equal(first.tensors["pixel_values"], images.tensors["pixel_values"][:4])
    assert torch.equal(second.tensors["pixel_values"], images.tensors["pixel_values"][:4])
    assert torch.equal(repeated.select([4]).tensors["pixel_values"], images.tensors["pixel_values"][4:])


def test_concat_appends_rows_and_pads_trailing_dims():
    a = ImageInputs.from_examples([{"pixel_values": torch.ones(1, 2, 3)}])
    b = ImageInputs.from_examples([{"pixel_values": torch.ones(1, 4, 3)}, {"pixel_values": torch.ones(1, 1, 3)}])
    both = ImageInputs.concat([a, b])
    assert both.sizes["pixel_values"] == [1, 1, 1]
    assert both.tensors["pixel_values"].shape == (3, 4, 3)  # zero-padded like LLaVA-NeXT's patch lists
    assert both.tensors["pixel_values"][0].sum() == 6 and both.tensors["pixel_values"][2].sum() == 3


def test_lightning_moves_and_casts_only_the_pixels():
    batch = {"input_ids": torch.zeros(3, 2, dtype=torch.long), "image_inputs": qwen_like()}
    moved = move_data_to_device(batch, torch.device("meta"))
    assert isinstance(moved["image_inputs"], ImageInputs)
    assert all(t.device.type == "meta" for t in moved["image_inputs"].tensors.values())
    half = qwen_like().to(torch.bfloat16)
    assert half.tensors["pixel_values"].dtype == torch.bfloat16
    assert half.tensors["image_grid_thw"].dtype == torch.long
