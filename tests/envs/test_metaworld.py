"""The Meta-World wrapper: seeded resets, projections checked against MuJoCo's own segmentation, the experts, splits
and the errors (unknown task, no GL context)."""
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from posttrain.envs import make_env
from posttrain.envs.metaworld import COLORS, PROGRESS, TASKS, MetaWorldEnv, RenderError, split_seeds
from posttrain.utils.config import ConfigError

CONFIG = {"id": "metaworld", "tasks": list(TASKS), "image_size": 64}


@pytest.fixture(scope="module")
def env():
    env = make_env(CONFIG)
    yield env
    env.close()


def test_seeded_reset_reproduces_images_state_and_instruction(env):
    first, info = env.reset(seed=11)
    again, info_again = env.reset(seed=11)
    for key in ("scene", "wrist", "state"):
        np.testing.assert_array_equal(first[key], again[key])
    assert first["instruction"] == again["instruction"] and info["projections"] == info_again["projections"]
    fresh = MetaWorldEnv(tasks=list(TASKS), image_size=64)  # new simulators and renderers, same seed
    try:
        other, _ = fresh.reset(seed=11)
        np.testing.assert_array_equal(first["scene"], other["scene"])
        assert first["instruction"] == other["instruction"]
    finally:
        fresh.close()
    moved, _ = env.reset(seed=12, options={"task": info["task"], "color": info["color"]})
    assert not np.array_equal(first["scene"], moved["scene"])  # another seed, another layout


def test_an_environment_back_from_the_evaluators_pool_plays_as_a_new_one():
    """The closed-loop evaluator reuses environments across arms: one that played another episode (another layout
    and appearance, left mid-episode) renders and steps exactly as a new one after reset(seed)."""
    from posttrain.vla.evaluator import borrow_env, release_env

    config, overrides = {"id": "metaworld", "tasks": ["pick-place-v3"], "held_out": [], "image_size": 32}, \
        {"appearance": "in_domain"}  # a new appearance drawn at every reset: textures change between episodes
    used = borrow_env(config, "val", overrides)
    used.reset(seed=5)
    for _ in range(3):
        used.step(used.expert_action())
    release_env(used, config, "val", overrides)
    reused = borrow_env(config, "val", overrides)
    fresh = make_env(config, split="val", **overrides)
    try:
        assert reused is used
        seen, expected = reused.reset(seed=11)[0], fresh.reset(seed=11)[0]
        for _ in range(4):
            for key in ("scene", "wrist", "state"):
                np.testing.assert_array_equal(seen[key], expected[key])
            action = fresh.expert_action()
            seen, expected = reused.step(action)[0], fresh.step(action)[0]
    finally:
        fresh.close()
        reused.close()


def test_observation_contract(env):
    obs, info = env.reset(seed=3)
    assert obs["scene"].shape == obs["wrist"].shape == (64, 64, 3) and obs["scene"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    assert info["color"] in obs["instruction"] and info["noun"] in obs["instruction"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert isinstance(reward, float) and not terminated and not truncated and info["success"] is False
    assert set(info["projections"]) == {"scene", "wrist"}


@pytest.mark.parametrize("task", list(TASKS))
def test_projected_object_lands_on_its_pixels(env, task):
    """The projected centre is a pixel of the object in MuJoCo's segmentation, and the projected box matches the
    segmentation's box to about a pixel, in both views."""
    for seed in (0, 1):
        obs, info = env.reset(seed=seed, options={"task": task, "color": "red"})
        for view in ("scene", "wrist"):
            mask = env.segmentation(view) == env.object_geom()
            assert mask.sum() >= 4, f"object hidden in {view}"
            u, v = info["projections"][view]["object"]
            assert mask[int(v), int(u)]
            ys, xs = np.nonzero(mask)
            np.testing.assert_allclose(info["projections"][view]["object_box"],
                                       [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.6)
            pixel = obs[view][int(v), int(u)].astype(float)  # rendered red where the object is
            assert pixel[0] > pixel[1] + 40 and pixel[0] > pixel[2] + 40


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_and_the_object_ends_at_the_projected_goal(env, task):
    obs, info = env.reset(seed=5, options={"task": task})
    start = info["projections"]["scene"]
    for _ in range(env.max_steps):
        obs, _, terminated, truncated, info = env.step(env.expert_action(obs))
        if terminated or truncated:
            break
    assert info["success"] and terminated
    end = info["projections"]["scene"]
    gap = np.linalg.norm(np.subtract(end["object"], end["goal"]))
    assert gap < 8.0, f"object {end['object']} far from goal {end['goal']} in pixels"
    assert np.linalg.norm(np.subtract(start["object"], start["goal"])) > gap


def test_progress_signals_follow_the_expert_and_fold_into_episode_measures(env):
    """`step` passes on Meta-World's progress signals; `track_progress` keeps ever-near, ever-grasped and the final
    distance: the expert's pick-place episode reaches, grasps and ends within 7 cm, standing still does none."""
    from posttrain.vla.evaluator import track_progress

    for expert, expected in ((True, (1.0, 1.0)), (False, (0.0, 0.0))):
        obs, info = env.reset(seed=5, options={"task": "pick-place-v3"})
        progress = {}
        for _ in range(env.max_steps):
            action = env.expert_action(obs) if expert else np.zeros(4, dtype=np.float32)
            obs, _, terminated, truncated, info = env.step(action)
            assert set(PROGRESS) <= set(info)
            track_progress(progress, info)
            if terminated or truncated:
                break
        assert (progress["reached"], progress["grasped"]) == expected
        assert progress["distance"] == info["obj_to_target"]
        assert (progress["distance"] <= 0.07) == expert


def test_track_progress_by_hand():
    from posttrain.vla.evaluator import track_progress

    progress = {}
    for near, grasp, distance in ((0.0, 0.0, 0.3), (1.0, 0.0, 0.2), (0.0, 1.0, 0.25), (0.0, 0.0, 0.1)):
        track_progress(progress, {"near_object": near, "grasp_success": grasp, "obj_to_target": distance})
    assert progress == {"reached": 1.0, "grasped": 1.0, "distance": 0.1}
    track_progress(empty := {}, {"success": True})  # an env without progress signals adds nothing
    assert empty == {}


def test_splits_hold_out_combinations_paraphrases_and_seeds():
    held = MetaWorldEnv(split="test_combos")
    paraphrase = MetaWorldEnv(split="test_paraphrase")
    train = MetaWorldEnv(split="train")
    assert set(held.combos) == {("pick-place-v3", "purple"), ("push-v3", "orange"), ("shelf-place-v3", "yellow")}
    assert not set(held.combos) & set(train.combos) and set(paraphrase.combos) == set(train.combos)
    for task in TASKS:
        assert not set(train.phrases(task)) & set(paraphrase.phrases(task))
    seeds = {split: set(split_seeds(split, 100)) for split in ("train", "val", "test_combos", "test_paraphrase")}
    assert sum(len(s) for s in seeds.values()) == len(set().union(*seeds.values()))
    assert len(COLORS) * len(TASKS) == len(held.combos) + len(train.combos)


def test_bad_configs_name_their_keys():
    with pytest.raises(ConfigError, match=r"env\.tasks\[1\]: unknown task 'pick-place-v9'"):
        make_env({"id": "metaworld", "tasks": ["push-v3", "pick-place-v9"]})
    with pytest.raises(ConfigError, match=r"env\.colors\[0\]"):
        make_env({"id": "metaworld", "colors": ["teal"]})
    with pytest.raises(ConfigError, match=r"env\.held_out\[0\]"):
        make_env({"id": "metaworld", "held_out": ["push-v3-purple"]})
    with pytest.raises(ConfigError, match=r"env\.held_out: split 'test_combos' has no"):
        make_env({"id": "metaworld", "held_out": []}, split="test_combos")
    with pytest.raises(ConfigError, match=r"env\.split"):
        make_env({"id": "metaworld"}, split="test_ood")
    with pytest.raises(ConfigError, match=r"env\.scene_camera\.zoom: unknown key"):
        make_env({"id": "metaworld", "scene_camera": {"zoom": 2}})
    with pytest.raises(ConfigError, match=r"env\.image_size"):
        make_env({"id": "metaworld", "image_size": 512})
    bad_camera = make_env({"id": "metaworld", "tasks": ["push-v3"], "wrist_camera": "nose"})
    with pytest.raises(ConfigError, match=r"env\.wrist_camera: no camera 'nose' in push-v3"):
        bad_camera.reset(seed=0)


def test_no_gl_context_is_a_clear_error():
    """glfw without a display cannot create a context: the error says which MUJOCO_GL and apt packages work."""
    code = ("from posttrain.envs.metaworld import MetaWorldEnv, RenderError\n"
            "env = MetaWorldEnv(tasks=['push-v3'])\n"
            "try:\n    env.reset(seed=0)\nexcept RenderError as err:\n    print('RENDER-ERROR', err)\n")
    environ = {k: v for k, v in os.environ.items() if k != "DISPLAY"} | {"MUJOCO_GL": "glfw"}
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert "RENDER-ERROR" in out.stdout, out.stderr[-2000:]
    assert "MUJOCO_GL=egl" in out.stdout and "libegl1" in out.stdout and "libosmesa6" in out.stdout
    assert issubclass(RenderError, RuntimeError)


def test_gymnasium_make_and_its_env_checker():
    env = gym.make("posttrain/MetaWorld-v0", tasks=["push-v3"], image_size=32)
    try:
        check_env(env.unwrapped)  # seeding determinism, spaces, step/reset/render signatures
        assert env.unwrapped.render().shape == (32, 32, 3)
    finally:
        env.close()
