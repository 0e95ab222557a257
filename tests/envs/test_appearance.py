"""Appearance control: named sets (held-out values unseen in-domain), seeded sampling, errors naming the key, and
`apply_appearance` changing the object's pixels but not the geometry (same state -> same depth and segmentation)."""
import numpy as np
import pytest

from posttrain.envs.appearance import (
    APPEARANCE_SETS,
    ATTRIBUTES,
    DEMO,
    HELD_OUT,
    IN_DOMAIN,
    Appearance,
    apply_appearance,
    in_set,
    sample_appearance,
    texture_image,
    to_appearance,
)
from posttrain.envs.metaworld import MetaWorldEnv
from posttrain.utils.config import ConfigError


def test_sets_hold_out_values_unseen_in_domain():
    assert set(APPEARANCE_SETS) == {"demo", "in_domain", "held_out_objects", "held_out_background",
                                    "held_out_lighting", "held_out_all"}
    for name in ATTRIBUTES:
        assert not set(IN_DOMAIN[name]) & set(HELD_OUT[name]), name
        assert set(IN_DOMAIN[name]) | set(HELD_OUT[name]) <= set(ATTRIBUTES[name])
    assert in_set(DEMO, "demo") and in_set(DEMO, "in_domain")
    changed = {"held_out_objects": {"object_color", "object_texture"},
               "held_out_lighting": {"light_direction", "light_intensity"},
               "held_out_background": {"table_color", "table_texture", "background_color", "background_texture"},
               "held_out_all": set(ATTRIBUTES)}
    for set_name, keys in changed.items():
        for name in ATTRIBUTES:
            expected = HELD_OUT[name] if name in keys else IN_DOMAIN[name]
            assert APPEARANCE_SETS[set_name][name] == expected, (set_name, name)


def test_sampling_is_seeded_and_stays_in_its_set():
    draws = [sample_appearance("held_out_objects", np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(0)
    many = [sample_appearance("held_out_objects", rng) for _ in range(40)]
    assert all(in_set(a, "held_out_objects") for a in many)
    assert len({a.object_color for a in many}) > 1 and not any(in_set(a, "in_domain") for a in many)
    assert sample_appearance("demo", rng) == DEMO


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^env\.appearance: unknown appearance set 'held_out_colours'"):
        sample_appearance("held_out_colours", np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"^method\.appearance: unknown appearance set"):
        sample_appearance("nope", np.random.default_rng(0), where="method.appearance")
    with pytest.raises(ConfigError, match=r"^appearance\.object_color: unknown value 'gold'"):
        Appearance(object_color="gold")
    with pytest.raises(ConfigError, match=r"^env\.appearance\.table_colour: unknown attribute"):
        to_appearance({"table_colour": "red"})
    with pytest.raises(ConfigError, match=r"^env\.appearance\.light_intensity: unknown value"):
        to_appearance({"light_intensity": "blinding"})
    assert to_appearance({"object_color": "cyan"}) == Appearance(object_color="cyan")


def test_textures_are_the_named_colour_with_a_darker_pattern():
    plain = np.frombuffer(texture_image("blue", "plain", 8, 8), np.uint8).reshape(8, 8, 3)
    assert (plain == plain[0, 0]).all() and plain[0, 0, 2] > plain[0, 0, 0] + 150
    checker = np.frombuffer(texture_image("blue", "checker", 8, 8), np.uint8).reshape(8, 8, 3)
    assert len(np.unique(checker.reshape(-1, 3), axis=0)) == 2 and checker.max() == plain.max()


@pytest.fixture(scope="module")
def sim():
    env = MetaWorldEnv(tasks=["pick-place-v3"], image_size=64)
    env.reset(seed=4)
    yield env.sim()
    env.close()


def render(sim, view: str, kind: str = "rgb") -> np.ndarray:
    renderer = sim.renderer(view)
    renderer.update_scene(sim.env.data, camera=sim.cameras[view])
    if kind == "depth":
        renderer.enable_depth_rendering()
    try:
        return renderer.render().copy()
    finally:
        renderer.disable_depth_rendering()


def test_apply_changes_the_object_pixels_not_the_geometry(sim):
    model, data = sim.env.model, sim.env.data
    qpos = data.qpos.copy()
    object_mask = {view: sim.render(view, segmentation=True)[0] == sim.object_geom for view in ("scene", "wrist")}
    assert all(mask.sum() >= 4 for mask in object_mask.values())
    views = list(sim.renderers.values())
    shown = {}
    for name, appearance in [("red", Appearance(object_color="red")),
                             ("cyan", Appearance(object_color="cyan", light_direction="left"))]:
        apply_appearance(model, appearance, views, data)
        shown[name] = {view: (render(sim, view), render(sim, view, "depth"), sim.render(view, segmentation=True)[0])
                       for view in ("scene", "wrist")}
    np.testing.assert_array_equal(data.qpos, qpos)  # nothing physical moved
    for view, mask in object_mask.items():
        (red, red_depth, red_seg), (cyan, cyan_depth, cyan_seg) = shown["red"][view], shown["cyan"][view]
        np.testing.assert_array_equal(red_depth, cyan_depth)
        np.testing.assert_array_equal(red_seg, cyan_seg)
        red_obj, cyan_obj = red[mask].astype(float).mean(0), cyan[mask].astype(float).mean(0)
        assert red_obj[0] > red_obj[1] + 40 and cyan_obj[1] > cyan_obj[0] + 40, view


def test_applying_is_absolute_and_skipped_uploads_match_full_ones(sim):
    """A, then B, then A (re-uploading only what differs from B) renders exactly as A applied from scratch."""
    model, data = sim.env.model, sim.env.data
    views = list(sim.renderers.values())
    first = Appearance(table_texture="checker", background_color="navy", light_intensity="dim")
    second = Appearance(object_color="pink", table_texture="checker", light_direction="front")
    apply_appearance(model, first, views, data)
    reference = render(sim, "scene")
    apply_appearance(model, second, views, data, previous=first)
    assert not np.array_equal(render(sim, "scene"), reference)
    apply_appearance(model, first, views, data, previous=second)
    np.testing.assert_array_equal(render(sim, "scene"), reference)


def test_light_intensity_brightens_the_scene(sim):
    model, data, views = sim.env.model, sim.env.data, list(sim.renderers.values())
    means = []
    for intensity in ("dim", "normal", "harsh"):
        apply_appearance(model, Appearance(light_intensity=intensity), views, data)
        means.append(render(sim, "scene").mean())
    assert means[0] + 10 < means[1] < means[2] - 10
