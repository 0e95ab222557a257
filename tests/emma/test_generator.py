"""The transfer model: conditioning shapes, both views denoised together, save/load, and the checks against the
simulator's views and resolution."""
import numpy as np
import pytest
import torch

from posttrain.emma.generator import (
    attribute_tokens,
    check_matches,
    geometry_channels,
    geometry_tensor,
    load_transfer,
    normalise_depth,
    pixels_tensor,
    to_frames,
    transfer_tiny,
)
from posttrain.envs.appearance import ATTRIBUTES, DEMO, Appearance
from posttrain.envs.metaworld import SEGMENTATION_CLASSES
from posttrain.losses.emma import transfer_loss
from posttrain.utils.config import ConfigError

SIZE = 16


def tiny(**kwargs):
    return transfer_tiny(image_size=SIZE, block_out_channels=(8, 16), norm_num_groups=4, sample_steps=2, **kwargs)[0]


def frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    views = {v: rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8) for v in ("scene", "wrist")}
    depth = {v: rng.uniform(0.2, 2.0, (n, SIZE, SIZE)).astype(np.float32) for v in ("scene", "wrist")}
    seg = {v: rng.integers(0, len(SEGMENTATION_CLASSES), (n, SIZE, SIZE)).astype(np.uint8) for v in ("scene", "wrist")}
    return views, depth, seg


def test_conditioning_shapes_stack_both_views():
    views, depth, seg = frames()
    geometry = geometry_tensor(depth, seg)
    assert geometry.shape == (3, geometry_channels(2), SIZE, SIZE) == (3, 12, SIZE, SIZE)
    # depth channels in [-1, 1] per image; the one-hot maps are ±1 with exactly one +1 per pixel and view
    assert geometry[:, :2].min() == -1 and geometry[:, :2].max() == 1
    onehot_scene = geometry[:, 2:2 + len(SEGMENTATION_CLASSES)]
    assert torch.equal((onehot_scene > 0).sum(1), torch.ones(3, SIZE, SIZE, dtype=torch.long))
    assert torch.equal(onehot_scene.argmax(1), torch.as_tensor(seg["scene"]).long())
    pixels = pixels_tensor(views)
    assert pixels.shape == (3, 6, SIZE, SIZE)
    back = to_frames(pixels)
    assert all(np.array_equal(back[v], views[v]) for v in views)
    tokens = attribute_tokens([DEMO, Appearance(object_color="cyan")])
    assert tokens.shape == (2, len(ATTRIBUTES)) and tokens[1, 0] == ATTRIBUTES["object_color"].index("cyan")


def test_the_model_predicts_both_views_from_geometry_and_tokens():
    model = tiny()
    _, depth, seg = frames()
    geometry = geometry_tensor(depth, seg)
    x = torch.randn(3, 6, SIZE, SIZE)
    out = model(x, torch.tensor([1, 5, 9]), geometry, attribute_tokens([DEMO] * 3))
    assert out.shape == (3, 6, SIZE, SIZE)
    # the appearance tokens and the geometry change the prediction
    other = model(x, torch.tensor([1, 5, 9]), geometry, attribute_tokens([Appearance(object_color="cyan")] * 3))
    assert not torch.allclose(out, other)
    flipped = model(x, torch.tensor([1, 5, 9]), geometry.flip(-1), attribute_tokens([DEMO] * 3))
    assert not torch.allclose(out, flipped)
    # a wrong number of conditioning channels names the key
    with pytest.raises(ConfigError, match="generator.geometry"):
        model(x, torch.tensor([1, 5, 9]), geometry[:, :4], attribute_tokens([DEMO] * 3))
    loss, _ = transfer_loss(out, torch.zeros_like(out))
    loss.backward()
    assert model.attributes.tables[0].weight.grad is not None


def test_sampling_is_seeded_and_round_trips_through_save(tmp_path):
    model = tiny()
    _, depth, seg = frames(2)
    geometry, tokens = geometry_tensor(depth, seg), attribute_tokens([DEMO] * 2)
    noise = torch.randn(2, 6, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    first = model.sample(geometry, tokens, noise=noise)
    assert first.shape == (2, 6, SIZE, SIZE) and first.abs().max() <= 1
    model.save_pretrained(str(tmp_path))
    loaded = load_transfer(str(tmp_path))
    assert torch.allclose(loaded.sample(geometry, tokens, noise=noise), first, atol=1e-5)
    assert loaded.views == ("scene", "wrist") and loaded.image_size == SIZE


def test_a_generator_of_other_views_or_resolution_is_refused_naming_the_key(tmp_path):
    model = tiny()
    check_matches(model, ("scene", "wrist"), SIZE)
    with pytest.raises(ConfigError, match=r"method\.generator\.image_size.*32x32"):
        check_matches(model, ("scene", "wrist"), 32)
    with pytest.raises(ConfigError, match=r"method\.generator\.views"):
        check_matches(model, ("scene",), SIZE)
    with pytest.raises(ConfigError, match=r"model\.name_or_path"):
        load_transfer(str(tmp_path / "missing"))


def test_depth_is_normalised_per_image():
    depth = torch.tensor([[[1.0, 2.0], [3.0, 5.0]], [[10.0, 10.0], [10.0, 10.0]]])
    out = normalise_depth(depth)
    assert torch.allclose(out[0], torch.tensor([[-1.0, -0.5], [0.0, 1.0]]))
    assert torch.equal(out[1], torch.full((2, 2), -1.0))  # a flat image: no shape
