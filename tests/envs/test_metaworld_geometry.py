"""MetaWorldEnv's optional appearance control and geometry observations: depth and segmentation of both views
that agree with the simulator, layouts independent of the appearance, renderers made once, state round trips and
errors naming the key."""
import numpy as np
import pytest

from posttrain.envs import make_env
from posttrain.envs.appearance import APPEARANCE_SETS, in_set
from posttrain.envs.metaworld import SEGMENTATION_CLASSES, VIEWS, MetaWorldEnv
from posttrain.utils.config import ConfigError

CLASS = {name: i for i, name in enumerate(SEGMENTATION_CLASSES)}


@pytest.fixture(scope="module")
def env():
    env = MetaWorldEnv(tasks=["pick-place-v3", "shelf-place-v3"], image_size=64, appearance="in_domain",
                       geometry=True)
    yield env
    env.close()


def test_default_env_is_unchanged_by_the_options():
    plain = MetaWorldEnv(tasks=["pick-place-v3"], image_size=32)
    try:
        obs, info = plain.reset(seed=2)
        assert set(obs) == {"scene", "wrist", "state", "instruction"} and "appearance" not in info
        assert info["color"] in obs["instruction"]
    finally:
        plain.close()


def test_geometry_observations_agree_with_the_simulator(env):
    for task in ("pick-place-v3", "shelf-place-v3"):
        obs, info = env.reset(seed=3, options={"task": task})
        assert env.observation_space.contains(obs)
        sim = env.sim()
        points = sim.points()
        for view in VIEWS:
            depth, seg = obs[f"{view}_depth"], obs[f"{view}_segmentation"]
            assert depth.shape == seg.shape == (64, 64) and depth.dtype == np.float32 and seg.dtype == np.uint8
            # the object class is exactly the object geom's pixels in MuJoCo's own segmentation
            np.testing.assert_array_equal(seg == CLASS["object"], env.segmentation(view) == env.object_geom())
            assert {CLASS["robot"], CLASS["object"]} <= set(np.unique(seg).tolist())
            # depth at the object's projected centre: its distance along the camera axis, within its size
            _, camera = sim.render_views(view, geometry=False)
            u, v = info["projections"][view]["object"]
            expected = float((points["object"] - camera.position) @ camera.forward)
            assert abs(depth[int(v), int(u)] - expected) < 0.03, (task, view)
        scene_seg = obs["scene_segmentation"]
        assert (scene_seg == CLASS["table"]).mean() > 0.2  # the free camera looks down at the table
        u, v = info["projections"]["scene"]["goal"]
        assert scene_seg[int(v), int(u)] == CLASS["goal"], task  # the goal marker (shelf-place: on the shelf)


def test_appearance_changes_pixels_not_layout_or_geometry(env):
    first, first_info = env.reset(seed=8, options={"task": "pick-place-v3", "appearance": "held_out_all"})
    second, second_info = env.reset(seed=8, options={"task": "pick-place-v3", "appearance": "demo"})
    assert first_info["appearance"] != second_info["appearance"]
    assert in_set(env.appearance, "demo") and second_info["appearance"]["object_color"] in second["instruction"]
    np.testing.assert_array_equal(first["state"], second["state"])
    for view in VIEWS:
        np.testing.assert_array_equal(first[f"{view}_depth"], second[f"{view}_depth"])
        np.testing.assert_array_equal(first[f"{view}_segmentation"], second[f"{view}_segmentation"])
        assert np.abs(first[view].astype(int) - second[view].astype(int)).mean() > 10


def test_per_reset_draws_follow_the_set_and_the_seed(env):
    drawn = [env.reset(seed=s, options={"task": "pick-place-v3"})[1]["appearance"] for s in (0, 1, 2, 0)]
    assert drawn[0] == drawn[3] and len({tuple(d.values()) for d in drawn}) > 1
    allowed = APPEARANCE_SETS["in_domain"]
    assert all(d[name] in allowed[name] for d in drawn for name in d)
    _, info = env.reset(seed=0, options={"task": "pick-place-v3", "appearance": {"object_color": "cyan"}})
    assert info["appearance"]["object_color"] == "cyan" and info["color"] == "cyan"


def test_renderers_are_made_once_per_view(env):
    env.reset(seed=1, options={"task": "pick-place-v3"})
    sim = env.sim()
    made = {view: id(renderer) for view, renderer in sim.renderers.items()}
    for seed in (2, 3):
        env.reset(seed=seed, options={"task": "pick-place-v3"})
        for _ in range(3):
            env.step(env.action_space.sample())
    assert set(made) == set(VIEWS) and {view: id(r) for view, r in sim.renderers.items()} == made


def test_state_round_trip_re_renders_the_frame(env):
    obs, _ = env.reset(seed=5, options={"task": "pick-place-v3"})
    for _ in range(10):
        obs, *_ = env.step(env.expert_action(obs))
    state = env.sim_state()
    for _ in range(10):
        later, *_ = env.step(env.expert_action(obs))
    assert not np.array_equal(later["scene"], obs["scene"])
    env.sim().set_state(state)
    for view in VIEWS:
        rendered, _ = env.sim().render_views(view, geometry=True)
        np.testing.assert_array_equal(rendered["rgb"], obs[view])
        np.testing.assert_array_equal(rendered["depth"], obs[f"{view}_depth"])


def test_appearance_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^env\.appearance: unknown appearance set 'held_out_colour'"):
        make_env({"id": "metaworld", "tasks": ["pick-place-v3"], "appearance": "held_out_colour"})
    with pytest.raises(ConfigError, match=r"^env\.appearance\.object_colour: unknown attribute"):
        MetaWorldEnv(tasks=["pick-place-v3"], appearance={"object_colour": "red"})
    plain = MetaWorldEnv(tasks=["pick-place-v3"], image_size=32)
    try:
        with pytest.raises(ConfigError, match=r"^reset\.options\.appearance: unknown appearance set 'nope'"):
            plain.reset(seed=0, options={"appearance": "nope"})
    finally:
        plain.close()


def test_gymnasium_env_checker_passes_with_appearance_and_geometry():
    from gymnasium.utils.env_checker import check_env

    env = MetaWorldEnv(tasks=["pick-place-v3"], image_size=32, appearance="in_domain", geometry=True)
    try:
        check_env(env, skip_render_check=True)  # includes: seeded resets give identical observations
    finally:
        env.close()
