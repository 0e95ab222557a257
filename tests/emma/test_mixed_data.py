"""The arms' data: a fixed share of real samples per batch (data.real_fraction), also per process under DDP, and
data.train_size cutting real and edited frames in proportion."""
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DistributedSampler

from datamodules.emma import MixedRobotDataModule, proportional_prefix
from datamodules.sampler import RatioBatchSampler
from posttrain.emma import engine
from posttrain.envs.demos import read_demos
from posttrain.utils.config import ConfigError
from tests.emma.test_engine import tokenizer_for_tests
from tests.vla_fixtures import write_demos


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """2 real episodes and 3 edited ones (stand-ins: copies of the real ones)."""
    root = tmp_path_factory.mktemp("mixed")
    real = read_demos(write_demos(root / "real", episodes=2))
    engine.write_edited([real.episodes[0], real.episodes[1], real.episodes[0]], [0, 1, 0],
                        engine.edit_appearances("in_domain", 3, seed=0), "oracle", str(root / "edited"))
    return str(root / "real"), str(root / "edited")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for_tests()


def mixed(folders, tokenizer, **kwargs):
    data = MixedRobotDataModule(tokenizer, path=folders[0], edited_path=folders[1], chunk=2,
                                spatial_prompt="none", episode_splits=["val"], **kwargs)
    data.setup("fit")
    return data


def test_every_batch_has_the_configured_share_of_real_samples(folders, tokenizer):
    data = mixed(folders, tokenizer, batch_size=4, real_fraction=0.25)
    frames = len(data.frames)
    real_frames = sum(not data.frames.generated[e] for e, _ in data.frames.positions)
    assert 0 < real_frames < frames and real_frames / frames > 0.25  # the shuffled share would differ
    loader = data.train_dataloader()
    batches = list(loader)
    assert len(batches) == frames // 4
    assert all(b["generated"].tolist() == [False, True, True, True] for b in batches)
    seen = {i for b in batches for i, g in zip(b["index"].tolist(), b["generated"].tolist()) if not g}
    assert len(seen) == len(batches)  # one pass over the real frames: no repeat within it
    again = [b["index"].tolist() for b in data.train_dataloader()]
    assert again == [b["index"].tolist() for b in batches]  # a function of (seed, epoch)
    loader.batch_sampler.set_epoch(1)
    assert [b["index"].tolist() for b in loader] != again
    half = mixed(folders, tokenizer, batch_size=4, real_fraction=0.5)
    assert all(b["generated"].tolist() == [False, False, True, True] for b in half.train_dataloader())


def test_shuffled_together_when_no_fraction_is_set(folders, tokenizer):
    data = mixed(folders, tokenizer, batch_size=4)
    shares = {int((~b["generated"]).sum()) for b in data.train_dataloader()}
    assert len(shares) > 1  # the batches' real counts vary


def test_under_ddp_each_process_takes_every_other_batch_of_the_same_sequence(folders, tokenizer):
    data = mixed(folders, tokenizer, batch_size=4, real_fraction=0.5)
    real = [i for i, (e, _) in enumerate(data.frames.positions) if not data.frames.generated[e]]
    edited = [i for i in range(len(data.frames)) if i not in real]
    size = len(data.frames)
    whole = list(RatioBatchSampler(range(size), 4, True, real, edited, 2, seed=0))
    ranks = [list(RatioBatchSampler(DistributedSampler(range(size), num_replicas=2, rank=r), 4, True, real,
                                    edited, 2, seed=0)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) // 2  # the same number of steps on every process
    assert [b for pair in zip(*ranks) for b in pair] == whole[: 2 * len(ranks[0])]
    with _replace_dunder_methods(BatchSampler):  # as Lightning calls train_dataloader
        loader = data.train_dataloader()
    injected = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False),
                                  mode=RunningStage.TRAINING)  # what Lightning does under DDP
    assert isinstance(injected.batch_sampler, RatioBatchSampler) and injected.batch_sampler.rank == 1
    assert [b["index"].tolist() for b in injected] == ranks[1]


@pytest.mark.parametrize("fraction, batch_size", [(1.0, 4), (0.0, 4), (0.1, 4), (0.9, 4), (-0.5, 4)])
def test_a_fraction_without_both_kinds_in_a_batch_names_the_key(folders, tokenizer, fraction, batch_size):
    with pytest.raises(ConfigError, match=r"data\.real_fraction"):
        mixed(folders, tokenizer, batch_size=batch_size, real_fraction=fraction)


def test_train_size_cuts_real_and_edited_frames_in_proportion(folders, tokenizer):
    positions = [(0, 0), (0, 1), (1, 0), (1, 1)] + [(2, t) for t in range(3)] + [(3, t) for t in range(5)]
    generated = [False, False, True, True]  # 4 real frames, 8 edited
    assert proportional_prefix(positions, generated, 6) == [(0, 0), (0, 1), (2, 0), (2, 1), (2, 2), (3, 0)]
    assert proportional_prefix(positions, generated, 1) == [(0, 0)]  # a real frame is kept
    assert proportional_prefix(positions, generated, None) == positions
    assert proportional_prefix(positions, generated, 100) == positions
    whole = mixed(folders, tokenizer, batch_size=4)
    total = len(whole.frames)
    real_share = sum(not whole.frames.generated[e] for e, _ in whole.frames.positions) / total
    cut = mixed(folders, tokenizer, batch_size=4, train_size=total // 2)
    kept = cut.frames.positions
    assert len(kept) == total // 2
    share = sum(not cut.frames.generated[e] for e, _ in kept) / len(kept)
    assert abs(share - real_share) <= 1 / len(kept)
    assert torch.tensor([cut.frames.generated[e] for e, _ in kept]).any()  # edited frames are not cut first
