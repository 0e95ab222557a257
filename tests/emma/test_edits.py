"""The data engine's reference editors: oracle re-rendering (the demo appearance reproduces the recorded frames
exactly; another appearance changes pixels, not depth, segmentation, states or actions) and the geometry-breaking
editor (independent per view and frame, shifts bounded, robot kept)."""
import numpy as np
import pytest

from posttrain.emma.edits import ReplayError, inconsistent_edit, oracle_episode, replay_states, rerender_states
from posttrain.envs.appearance import DEMO, Appearance
from posttrain.envs.demos import collect_episode
from posttrain.envs.metaworld import SEGMENTATION_CLASSES, VIEWS, MetaWorldEnv

OPTIONS = {"task": "pick-place-v3"}
NEW = Appearance(object_color="cyan", object_texture="checker", table_color="navy", table_texture="dots",
                 background_color="maroon", light_direction="front", light_intensity="dim")


@pytest.fixture(scope="module")
def env():
    env = MetaWorldEnv(tasks=["pick-place-v3"], image_size=48, max_steps=12, appearance="demo")
    yield env
    env.close()


@pytest.fixture(scope="module")
def episode(env):
    return collect_episode(env, seed=3, options=OPTIONS)


def test_oracle_with_the_demo_appearance_reproduces_the_recorded_frames(env, episode):
    states = replay_states(env, episode.seed, episode.action, episode.state, OPTIONS)
    assert len(states) == len(episode) == 12
    frames = rerender_states(env, states, DEMO)
    np.testing.assert_array_equal(frames["scene"], episode.scene)
    np.testing.assert_array_equal(frames["wrist"], episode.wrist)


def test_oracle_episode_keeps_actions_states_and_geometry(env, episode):
    edited = oracle_episode(env, episode, NEW, OPTIONS)
    np.testing.assert_array_equal(edited.action, episode.action)
    np.testing.assert_array_equal(edited.state, episode.state)
    assert edited.scene.shape == episode.scene.shape and edited.scene.dtype == np.uint8
    assert np.abs(edited.scene.astype(int) - episode.scene.astype(int)).mean() > 10
    assert "cyan" in edited.instruction and episode.color not in edited.instruction and edited.color == "cyan"
    states = replay_states(env, episode.seed, episode.action, episode.state, OPTIONS)
    source, new = rerender_states(env, states, DEMO, geometry=True), rerender_states(env, states, NEW, geometry=True)
    for view in VIEWS:
        np.testing.assert_array_equal(source[f"{view}_depth"], new[f"{view}_depth"])
        np.testing.assert_array_equal(source[f"{view}_segmentation"], new[f"{view}_segmentation"])
        np.testing.assert_array_equal(new[view], edited.scene if view == "scene" else edited.wrist)


def test_replay_refuses_an_episode_it_does_not_reproduce(env, episode):
    state = episode.state.copy()
    state[4, 0] += 0.01
    with pytest.raises(ReplayError, match=r"^demos\[7\]: frame 4: replayed state"):
        replay_states(env, episode.seed, episode.action, state, OPTIONS, where="demos[7]")
    # another seed: the hand starts where it always does, the object does not
    replay_states(env, episode.seed + 1, episode.action[:1], episode.state[:1], OPTIONS)
    with pytest.raises(ReplayError, match=r"frame 0: replayed object at"):
        replay_states(env, episode.seed + 1, episode.action, episode.state, OPTIONS, episode.projections)


def square_video(frames: int = 5, size: int = 32) -> np.ndarray:
    video = np.full((frames, size, size, 3), 90, dtype=np.uint8)
    video[:, 13:19, 13:19] = 250  # a bright 6 x 6 square in the middle
    return video


def square_position(image: np.ndarray) -> tuple[float, float]:
    luminance = image.astype(float).mean(-1)
    ys, xs = np.nonzero(luminance > luminance.mean() + 0.5 * (luminance.max() - luminance.mean()))
    return float(ys.mean()), float(xs.mean())


def test_geometry_breaking_edit_is_independent_per_view_and_frame():
    video = square_video()
    frames = {"scene": video, "wrist": video.copy()}
    edited = inconsistent_edit(frames, np.random.default_rng(0), max_shift=2, max_rotation=0.0, max_scale=0.0)
    again = inconsistent_edit(frames, np.random.default_rng(0), max_shift=2, max_rotation=0.0, max_scale=0.0)
    for view in VIEWS:
        np.testing.assert_array_equal(edited[view], again[view])
        assert edited[view].shape == video.shape and edited[view].dtype == np.uint8
    shifts = []
    for t in range(len(video)):
        for view in VIEWS:
            y, x = square_position(edited[view][t])
            shifts.append((y - 15.5, x - 15.5))
            assert abs(y - 15.5) <= 2 + 1e-6 and abs(x - 15.5) <= 2 + 1e-6
    assert any(s != (0.0, 0.0) for s in shifts)  # the geometry moved somewhere
    colours = [edited[view][t, 2, 2].tolist() for t in range(len(video)) for view in VIEWS]  # background colour
    assert len({tuple(c) for c in colours}) == len(colours)  # every view and frame recoloured on its own
    assert edited["scene"][0, 2, 2].tolist() != edited["wrist"][0, 2, 2].tolist()


def test_segmentation_guided_edit_keeps_the_robot():
    video = square_video(frames=2)
    classes = {name: i for i, name in enumerate(SEGMENTATION_CLASSES)}
    seg = np.full(video.shape[:3], classes["table"], dtype=np.uint8)
    seg[:, :, :8] = classes["robot"]
    seg[:, 13:19, 13:19] = classes["object"]
    edited = inconsistent_edit({"scene": video}, np.random.default_rng(1), {"scene": seg}, max_shift=0,
                               max_rotation=0.0, max_scale=0.0)["scene"]
    robot = seg == classes["robot"]
    np.testing.assert_array_equal(edited[robot], video[robot])
    assert not np.array_equal(edited[seg == classes["object"]], video[seg == classes["object"]])
    assert not np.array_equal(edited[0][seg[0] == classes["table"]][0], edited[1][seg[1] == classes["table"]][0])


def test_warp_bounds_are_checked():
    from posttrain.utils.config import ConfigError

    with pytest.raises(ConfigError, match=r"^edits\.inconsistent: bounds"):
        inconsistent_edit({"scene": square_video(1)}, np.random.default_rng(0), max_shift=-1)
