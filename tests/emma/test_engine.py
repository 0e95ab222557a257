"""The data engine on a short Meta-World demonstration: every editor's episodes keep the source actions and states;
the folder names each edit's source episode; a generator of another resolution and an unknown appearance set are
refused naming their keys; the probes and the failure filter."""
import numpy as np
import pytest
import torch

from datamodules.emma import MixedRobotDataModule
from lightning_modules.emma_data import EditedEpisodesModule
from posttrain.emma import engine, probes
from posttrain.emma.generator import transfer_tiny
from posttrain.envs.demos import collect_episode, read_demos
from posttrain.envs.metaworld import VIEWS, MetaWorldEnv
from posttrain.utils.config import ConfigError
from tests.vla_fixtures import write_demos as write_toy_demos

SIZE = 16
ENV = {"id": "metaworld", "tasks": ["pick-place-v3"], "held_out": [], "image_size": SIZE, "max_steps": 6,
       "appearance": "demo"}


@pytest.fixture(scope="module")
def env():
    env = MetaWorldEnv(tasks=["pick-place-v3"], held_out=[], image_size=SIZE, max_steps=6, appearance="demo")
    yield env
    env.close()


@pytest.fixture(scope="module")
def episode(env):
    return collect_episode(env, seed=3)


@pytest.fixture(scope="module")
def generator():
    return transfer_tiny(image_size=SIZE, block_out_channels=(8, 16), norm_num_groups=4, sample_steps=2)[0].eval()


@pytest.mark.parametrize("editor", engine.EDITORS)
def test_every_editor_keeps_the_source_actions_and_states(env, episode, generator, editor):
    states, geometry = engine.source_geometry(env, episode)
    assert geometry["scene_depth"].shape == (len(episode), SIZE, SIZE)
    appearance = engine.edit_appearances("in_domain", 1, seed=5)[0]
    edited = engine.edit_episode(editor, episode, appearance, seed=1, env=env, states=states, geometry=geometry,
                                 model=generator, batch_size=4)
    np.testing.assert_array_equal(edited.action, episode.action)
    np.testing.assert_array_equal(edited.state, episode.state)
    assert edited.seed == episode.seed and edited.env_task == episode.env_task
    for view in VIEWS:
        new, old = getattr(edited, view), getattr(episode, view)
        assert new.shape == old.shape and new.dtype == np.uint8 and not np.array_equal(new, old)
    if editor in engine.NAMES_COLOUR:  # the others' colours are not a named appearance
        assert appearance.object_color in edited.instruction and edited.color == appearance.object_color
    else:
        assert edited.instruction == episode.instruction


def test_generated_frames_are_seeded_and_share_one_noise_per_edit(env, episode, generator):
    _, geometry = engine.source_geometry(env, episode)
    appearance = engine.edit_appearances("in_domain", 1, seed=5)[0]
    first = engine.generate_frames(generator, geometry, appearance, seed=2, batch_size=4)
    again = engine.generate_frames(generator, geometry, appearance, seed=2, batch_size=len(episode))
    for view in VIEWS:  # the same frames whatever the batching
        assert np.abs(first[view].astype(int) - again[view].astype(int)).max() <= 1
    other = engine.generate_frames(generator, geometry, appearance, seed=3, batch_size=4)
    assert any(not np.array_equal(other[view], first[view]) for view in VIEWS)  # the seed decides the noise


def test_edited_folder_names_its_sources_and_mixes_with_the_real_demonstrations(tmp_path):
    real = read_demos(write_toy_demos(tmp_path / "real", episodes=2))
    appearances = engine.edit_appearances("in_domain", 3, seed=0)
    edits = [real.episodes[1], real.episodes[0], real.episodes[1]]
    engine.write_edited(edits, [1, 0, 1], appearances, "oracle", str(tmp_path / "edited"))
    info = read_demos(str(tmp_path / "edited")).info
    assert info["source_episodes"] == [1, 0, 1] and info["editor"] == "oracle"
    assert info["appearances"][2] == appearances[2].as_dict()
    data = MixedRobotDataModule(tokenizer_for_tests(), path=str(tmp_path / "real"),
                                edited_path=str(tmp_path / "edited"), chunk=2, batch_size=4,
                                spatial_prompt="none", episode_splits=["val"])
    data.setup("fit")
    assert data.source_count == 2 and len(data.demos.episodes) == 5
    samples = [data.frames[i] for i in range(len(data.frames))]
    real_frames = sum(len(e) for e in real.episodes)
    assert [s["generated"] for s in samples] == [False] * real_frames + [True] * (len(samples) - real_frames)
    assert {s["source"] for s in samples[real_frames:]} == {0, 1}
    batch = next(iter(data.train_dataloader()))
    assert batch["source"].shape == (4,) and batch["generated"].dtype == torch.bool
    mean, std = data.kinematic_statistics()
    assert np.isfinite(mean) and std >= 0


def test_an_edited_folder_of_other_demonstrations_is_refused_naming_the_key(tmp_path):
    real = read_demos(write_toy_demos(tmp_path / "real", episodes=2))
    assert not np.array_equal(real.episodes[0].action, real.episodes[1].action)
    appearances = engine.edit_appearances("in_domain", 2, seed=0)
    for name, sources in (("swapped", [1, 0]), ("missing", [0, 2])):  # other actions; no such source episode
        engine.write_edited(real.episodes, sources, appearances, "oracle", str(tmp_path / name))
        data = MixedRobotDataModule(tokenizer_for_tests(), path=str(tmp_path / "real"),
                                    edited_path=str(tmp_path / name), chunk=2, batch_size=4,
                                    spatial_prompt="none", episode_splits=["val"])
        with pytest.raises(ConfigError, match=r"data\.edited_path.*source_episodes"):
            data.setup("fit")


def tokenizer_for_tests():
    from posttrain.models.vlm import tiny_vlm

    return tiny_vlm(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vision_depth=1,
                    vision_hidden_size=32, vision_heads=2, patch_size=8, merge_size=2, image_size=32)[1]


def test_a_generator_of_another_resolution_or_an_unknown_set_is_refused_naming_the_key():
    big = transfer_tiny(image_size=32, block_out_channels=(8, 16), norm_num_groups=4)[0]
    with pytest.raises(ConfigError, match=r"method\.generator\.image_size"):
        EditedEpisodesModule(env=ENV, editor="generator", generator=big)
    with pytest.raises(ConfigError, match=r"method\.generator"):
        EditedEpisodesModule(env=ENV, editor="generator", generator=None)
    with pytest.raises(ConfigError, match=r"method\.appearance_set.*no_such_set"):
        EditedEpisodesModule(env=ENV, editor="oracle", appearance_set="no_such_set")
    with pytest.raises(ConfigError, match=r"env\.appearance\.object_color"):
        EditedEpisodesModule(env={**ENV, "appearance": {"object_color": "gold"}}, editor="oracle")
    probed = EditedEpisodesModule(env=ENV, editor="generator", generator=transfer_tiny(
        image_size=SIZE, block_out_channels=(8, 16), norm_num_groups=4)[0], pool="/no/such/pool")
    with pytest.raises(ConfigError, match=r"method\.pool: '/no/such/pool' holds no render pool"):
        probed.on_predict_start()
    probed.env.close()


def test_the_failure_filter_is_relative_to_the_real_renders():
    reference = {"depth_error": 0.2, "cross_view": 0.05, "attribute_accuracy": 0.9}
    good = {"depth_error": 0.3, "cross_view": 0.08, "attribute_accuracy": 0.6}
    assert probes.passes(good, reference, tolerance=2.0, min_attribute_accuracy=0.5)
    assert not probes.passes({**good, "depth_error": 0.41}, reference, tolerance=2.0)
    assert not probes.passes({**good, "cross_view": 0.11}, reference, tolerance=2.0)
    assert not probes.passes({**good, "attribute_accuracy": 0.4}, reference, min_attribute_accuracy=0.5)


def test_the_probes_calibrate_on_the_last_fifth_of_the_pool_episodes():
    episode = np.repeat(np.arange(16), 3)  # 16 episodes of 3 rows
    assert sorted(set(episode[probes.calibration_rows(episode)])) == [13, 14, 15]
    four = np.repeat(np.arange(4), 2)
    assert sorted(set(four[probes.calibration_rows(four)])) == [3]
    assert len(probes.calibration_rows(np.zeros(5, dtype=np.int64))) == 0  # one episode: nothing to hold out


def test_probes_measure_generated_frames(env, episode):
    states, geometry = engine.source_geometry(env, episode)
    pool = {v: np.concatenate([getattr(episode, v)] * 2) for v in VIEWS}
    pool.update({f"{v}_depth": np.concatenate([geometry[f"{v}_depth"]] * 2) for v in VIEWS})
    n = 2 * len(episode)
    pool.update({"state": np.concatenate([episode.state] * 2), "object": np.zeros((n, 3), np.float32),
                 "tokens": np.zeros((n, 8), np.int64)})
    fitted = probes.train_probes(pool, steps=3, batch_size=4)
    measures = probes.quality(fitted, {v: getattr(episode, v) for v in VIEWS},
                              {v: geometry[f"{v}_depth"] for v in VIEWS}, episode.state, 0)
    assert set(measures) == {"depth_error", "cross_view", "attribute_accuracy"}
    assert 0 <= measures["attribute_accuracy"] <= 1 and measures["depth_error"] >= 0


def test_the_evaluator_plays_each_appearance_split_in_an_env_of_that_appearance_set():
    from posttrain.vla.evaluator import ClosedLoopEvaluator

    evaluator = ClosedLoopEvaluator(ENV, max_steps=2, split_envs={
        "held_out_objects": {"split": "val", "appearance": "held_out_objects"}})
    held_out, = evaluator.environments("held_out_objects", 1)
    own, = evaluator.environments("val", 1)  # a split not named: the env's own split and appearance
    try:
        assert (held_out.split, held_out.appearance_set) == ("val", "held_out_objects")
        assert (own.split, own.appearance_set) == ("val", "demo")
    finally:
        held_out.close()
        own.close()
