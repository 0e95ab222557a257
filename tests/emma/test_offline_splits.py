"""The arms' offline splits: held-out expert frames (data.frame_splits) as `offline/<split>` evaluation splits,
normalised by the training demonstrations' statistics, and the evaluator's action error on them, by hand."""
import dataclasses

import pytest
import torch
from torch import nn

from datamodules.emma import MixedRobotDataModule
from posttrain.envs import demos
from posttrain.envs.demos import action_chunk, read_demos
from posttrain.utils.config import ConfigError
from posttrain.vla.evaluator import ClosedLoopEvaluator, chunk_error
from posttrain.vla.normalize import normalize_actions
from tests.emma.test_engine import tokenizer_for_tests
from tests.vla_fixtures import write_demos


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Real demonstrations and held-out episodes of other layouts (so other action statistics)."""
    root = tmp_path_factory.mktemp("offline")
    return write_demos(root / "real", episodes=2, seed=0), write_demos(root / "held_out", episodes=3, seed=40)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for_tests()


def data_module(tokenizer, real, **kwargs):
    data = MixedRobotDataModule(tokenizer, path=real, chunk=2, spatial_prompt="none", episode_splits=["val"],
                                **kwargs)
    data.setup("fit")
    return data


def test_frame_splits_are_offline_splits_normalised_by_the_training_statistics(folders, tokenizer):
    real, held_out = folders
    data = data_module(tokenizer, real, frame_splits={"demo": held_out, "held_out_objects": held_out},
                       frame_stride=2, frame_batch_size=5)
    assert data.eval_splits == ("val", "offline/demo", "offline/held_out_objects")
    episodes = read_demos(held_out).episodes
    every = [(e, t) for e in range(len(episodes)) for t in range(len(episodes[e]))]
    frames = data.offline["demo"]
    assert frames.positions == every[::2]
    training = read_demos(real).stats["action"]
    assert training != read_demos(held_out).stats["action"]  # the folders' own statistics differ
    e, t = frames.positions[3]
    raw, mask = action_chunk(episodes[e].action, t, 2)
    expected = normalize_actions(torch.from_numpy(raw), torch.tensor(training["q01"]), torch.tensor(training["q99"]))
    torch.testing.assert_close(frames[3]["actions"], expected)
    loaders = data.val_dataloader()
    assert len(loaders) == 3
    batch = next(iter(loaders[1]))
    assert batch["actions"].shape == (5, 2, 4) and batch["action_mask"].shape == (5, 2)
    assert len(loaders[2].dataset) == len(frames)
    data.teardown("fit")  # a later validation reads the frames again
    assert data.offline is None and len(data.val_dataloader()) == 3 and len(data.offline["demo"]) == len(frames)


def test_a_missing_or_mismatched_frame_split_names_its_key(folders, tokenizer, tmp_path):
    real, held_out = folders
    with pytest.raises(ConfigError, match=r"data\.frame_splits\.held_out_lighting"):
        data_module(tokenizer, real, frame_splits={"held_out_lighting": None})
    halved = [dataclasses.replace(e, scene=e.scene[:, ::2, ::2], wrist=e.wrist[:, ::2, ::2])
              for e in read_demos(held_out).episodes]
    other = demos.write_demos(halved, str(tmp_path / "halved"))
    with pytest.raises(ConfigError, match=r"data\.frame_splits\.demo: .* has frames of"):
        data_module(tokenizer, real, frame_splits={"demo": other})
    with pytest.raises(ConfigError, match=r"data\.frame_stride"):
        data_module(tokenizer, real, frame_splits={"demo": held_out}, frame_stride=0)


class FixedPolicy(nn.Module):
    """Samples one fixed normalised chunk for every frame."""

    def __init__(self, chunk: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.chunk = chunk

    def condition(self, input_ids, attention_mask, image_inputs, views):
        return torch.zeros(len(input_ids), 1)

    def sample(self, condition, state, generator=None, **sampling):
        return self.chunk.expand(len(condition), *self.chunk.shape)


def test_action_error_by_hand():
    evaluator = ClosedLoopEvaluator({"id": "toy_reach"})
    evaluator.setup(["offline/demo"], tokenizer=None)
    # 2 frames, chunks of 2 steps and 2 dims; the policy's 3.0 is clipped to 1
    policy = FixedPolicy(torch.tensor([[0.5, 3.0], [0.0, 0.0]]))
    batch = {"prompt_input_ids": torch.zeros(2, 3, dtype=torch.long), "prompt_attention_mask": torch.ones(2, 3),
             "image_inputs": torch.zeros(2, 1), "views": torch.zeros(2, 1, 3, 4, 4), "state": torch.zeros(2, 2),
             "actions": torch.tensor([[[0.5, 1.0], [1.0, 1.0]], [[-0.5, 1.0], [0.0, 0.0]]]),
             "action_mask": torch.tensor([[1.0, 1.0], [1.0, 0.0]])}
    evaluator.update(policy, batch, "offline/demo", seed=0)
    # frame 0: steps (0 + 0) / 2 = 0 and (1 + 1) / 2 = 1 -> 0.5; frame 1: its one real step (1 + 0) / 2 = 0.5
    assert evaluator.compute() == {"offline/demo/action_mse": pytest.approx(0.5)}
    torch.testing.assert_close(chunk_error(torch.zeros(1, 2, 1), torch.tensor([[[2.0], [4.0]]]),
                                           torch.tensor([[1.0, 1.0]])), torch.tensor([10.0]))
