"""The conventional-augmentation control: colour operations and resized crops by hand, a draw per view and frame,
seeded, the source actions and states kept; bad parameters name their key."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.emma_data import EditedEpisodesModule
from posttrain.emma import augment, engine
from posttrain.envs.demos import read_demos
from posttrain.utils.config import ConfigError
from tests.vla_fixtures import write_demos

RED = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)


def test_colour_operations_by_hand():
    image = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(augment.adjust_brightness(image, torch.tensor([0.5])), image * 0.5)
    luma = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    torch.testing.assert_close(augment.adjust_saturation(image, torch.tensor([0.0])), torch.full_like(image, luma))
    torch.testing.assert_close(augment.adjust_contrast(image, torch.tensor([0.0])), torch.full_like(image, luma))
    green = augment.adjust_hue(RED, torch.tensor([1 / 3]))  # a third of the hue circle: red -> green
    torch.testing.assert_close(green, torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2))
    colours = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment.hsv_to_rgb(augment.rgb_to_hsv(colours)), colours)
    for op in (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation):
        torch.testing.assert_close(op(colours, torch.ones(5)), colours)  # factor 1: unchanged
    torch.testing.assert_close(augment.adjust_hue(colours, torch.zeros(5)), colours)


def test_resized_crop_is_the_box_resized_bilinearly():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = augment.resized_crops(images, torch.tensor([[0, 0, 8, 8], [0, 0, 8, 8]]))
    torch.testing.assert_close(whole, images)
    boxes = torch.tensor([[2, 1, 4, 6], [0, 3, 5, 5]])
    cropped = augment.resized_crops(images, boxes)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = F.interpolate(images[i:i + 1, :, top:top + h, left:left + w], size=(8, 8), mode="bilinear",
                                 align_corners=False)
        torch.testing.assert_close(cropped[i:i + 1], expected)


def test_crop_boxes_fit_and_keep_the_area_range():
    boxes = augment.crop_boxes(500, 32, 32, torch.Generator().manual_seed(2), scale=(0.8, 1.0), ratio=(0.75, 4 / 3))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = (h * w).float() / 32 ** 2
    assert area.min() >= 0.75 and area.max() <= 1.0  # 0.8 of the area up to rounding
    assert len(set(map(tuple, boxes.tolist()))) > 50  # a draw per image


def frames_of_copies(t=4, size=16):
    """Two views of `t` identical frames: any difference between outputs comes from the draws."""
    image = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return {"scene": np.stack([image] * t), "wrist": np.stack([image] * t)}


def test_every_view_and_frame_gets_its_own_seeded_draw():
    frames = frames_of_copies()
    first = augment.conventional_augment(frames, seed=3, **augment.AUGMENTATION)
    again = augment.conventional_augment(frames, seed=3, **augment.AUGMENTATION)
    other = augment.conventional_augment(frames, seed=4, **augment.AUGMENTATION)
    for view in frames:
        assert first[view].shape == frames[view].shape and first[view].dtype == np.uint8
        np.testing.assert_array_equal(first[view], again[view])  # seeded
        assert not np.array_equal(first[view], other[view])
        assert not np.array_equal(first[view], frames[view])  # pixels change
        assert len({first[view][t].tobytes() for t in range(4)}) == 4  # per frame, not per episode
    assert not np.array_equal(first["scene"], first["wrist"])  # per view


def test_the_augmentation_editor_keeps_the_source_actions_and_states(tmp_path):
    episode = read_demos(write_demos(tmp_path / "real", episodes=1)).episodes[0]
    appearance = engine.edit_appearances("in_domain", 1, seed=0)[0]
    edited = engine.edit_episode("augmentation", episode, appearance, seed=1)
    np.testing.assert_array_equal(edited.action, episode.action)
    np.testing.assert_array_equal(edited.state, episode.state)
    assert edited.instruction == episode.instruction and edited.seed == episode.seed
    for view in ("scene", "wrist"):
        new, old = getattr(edited, view), getattr(episode, view)
        assert new.shape == old.shape and new.dtype == np.uint8 and not np.array_equal(new, old)
    same = engine.edit_episode("augmentation", episode, appearance, seed=1)
    np.testing.assert_array_equal(same.scene, edited.scene)


@pytest.mark.parametrize("options, key", [({"hue": 0.7}, "method.augmentation.hue"),
                                          ({"brightness": -0.1}, "method.augmentation.brightness"),
                                          ({"crop_scale": [0.0, 1.0]}, "method.augmentation.crop_scale"),
                                          ({"crop_ratio": [2.0, 1.0]}, "method.augmentation.crop_ratio"),
                                          ({"crop_scale": 0.5}, "method.augmentation.crop_scale"),
                                          ({"crop_ratio": [0.5, 1.0, 2.0]}, "method.augmentation.crop_ratio"),
                                          ({"contrast": "high"}, "method.augmentation.contrast"),
                                          ({"jitter": 0.1}, "method.augmentation.jitter")])
def test_bad_augmentation_parameters_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        augment.augmentation_options(options)


def test_augmentation_parameters_belong_to_the_augmentation_editor():
    env = {"id": "metaworld", "tasks": ["pick-place-v3"], "held_out": [], "image_size": 16, "max_steps": 4,
           "appearance": "demo"}
    with pytest.raises(ConfigError, match=r"method\.augmentation"):
        EditedEpisodesModule(env=env, editor="oracle", augmentation={"hue": 0.1})
