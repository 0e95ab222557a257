"""The robot DataModule: frames -> normalised action chunks padded at episode ends, prompts with the spatial prompt,
views and states; co-training pairs; malformed demonstrations name the file."""
import pytest
import torch

from datamodules.robot import CyclingSampler, RobotDataModule
from posttrain.models.vlm import tiny_vlm
from posttrain.utils.config import ConfigError
from tests.vla_fixtures import GroundingTask, write_demos


@pytest.fixture(scope="module")
def processor():
    return tiny_vlm(hidden_size=64, num_heads=2, intermediate_size=128, vision_hidden_size=32, vision_heads=2,
                    image_size=32)[1]


def datamodule(processor, path, **kwargs):
    dm = RobotDataModule(processor, path=path, **{"batch_size": 4, "chunk": 3, **kwargs})
    dm.setup("fit")
    return dm


def test_robot_batches_hold_normalised_chunks_views_states_and_prompts(tmp_path, processor):
    dm = datamodule(processor, write_demos(tmp_path), spatial_prompt="box")
    batch = next(iter(dm.train_dataloader()))[0]["robot"]
    assert batch["actions"].shape == (4, 3, 4) and batch["action_mask"].shape == (4, 3)
    assert batch["actions"].abs().max() <= 1.0
    last = len(dm.demos.episodes[0]) - 1  # an episode's last frame: its chunk repeats its last action
    frame = dm.frames[last]
    assert frame["action_mask"].tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(frame["actions"][1:], frame["actions"][:1].expand(2, -1))
    assert batch["views"].shape == (4, 2, 3, 32, 32) and 0 <= batch["views"].min() and batch["views"].max() <= 1
    assert batch["state"].shape == (4, 5)
    text = processor.tokenizer.decode(batch["prompt_input_ids"][0], skip_special_tokens=True)
    assert "move the point to the red goal" in text and "bounding boxes" in text
    assert batch["prompt_attention_mask"][:, -1].all()  # left-padded
    assert set(dm.statistics) == {
        "action_q01", "action_q99", "state_mean", "state_std"}


def test_cotraining_pairs_every_robot_batch_with_a_grounding_batch(tmp_path, processor):
    dm = datamodule(processor, write_demos(tmp_path), grounding=GroundingTask(size=5), cotrain=True,
                    grounding_batch_size=2)
    loader = dm.train_dataloader()
    batches = [b for b, _, _ in loader]
    assert len(batches) == len(dm.frames) // 4
    for batch in batches:
        assert batch["grounding"]["input_ids"].shape[0] == 2 and (batch["grounding"]["labels"] != -100).any()
        assert "image_inputs" in batch["grounding"]
    assert dm.eval_splits == ("val", "test_combos", "test_paraphrase", "grounding") and len(dm.val_dataloader()) == 4


def test_cycling_sampler_draws_every_example_per_pass_and_repeats_per_epoch():
    sampler = CyclingSampler(5, 12, seed=1)
    first = list(sampler)
    assert len(first) == 12 and sorted(first[:5]) == list(range(5)) and sorted(first[5:10]) == list(range(5))
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_bad_settings_name_their_key(tmp_path, processor):
    path = write_demos(tmp_path / "demos")
    with pytest.raises(ConfigError, match=r"data\.spatial_prompt"):
        RobotDataModule(processor, path=path, spatial_prompt="boxes")
    with pytest.raises(ConfigError, match=r"data\.cotrain"):
        RobotDataModule(processor, path=path, cotrain=True)
    with pytest.raises(ConfigError, match=r"data\.views"):
        datamodule(processor, path, views=["scene", "top"])
    with pytest.raises(ConfigError, match=r"data\.path"):
        datamodule(processor, None)
    with pytest.raises(ConfigError, match=r"model\.action_dim"):
        datamodule(processor, path).check_model(action_dim=7, state_dim=5)
