"""experiment=emma's configuration errors name their keys before anything is collected or trained (Hydra wraps the
ConfigError of a stage's constructor in its InstantiationException; the message is kept); the data-producing stages'
cache keys hold what they use, not the policy's config."""
import pytest

from posttrain.pipeline import plan, train
from tests.helpers import compose_config


def test_an_unknown_appearance_set_names_the_key(tmp_path):
    cfg = compose_config(["experiment=emma", "debug=tiny", "env.appearance=no_such_set"], tmp_path)
    with pytest.raises(Exception, match=r"env\.appearance: unknown appearance set 'no_such_set'"):
        train(cfg)


def test_an_unknown_attribute_value_names_the_key(tmp_path):
    cfg = compose_config(["experiment=emma", "debug=tiny", "env.appearance={object_color:gold}"], tmp_path)
    with pytest.raises(Exception, match=r"env\.appearance\.object_color: unknown value 'gold'"):
        train(cfg)


FRAME_STAGES = ("frames_demo", "frames_in_domain", "frames_held_out_objects", "frames_held_out_background",
                "frames_held_out_lighting")
DATA_STAGES = ("demos", "pool", "generated", "oracle_edits", "breaking_edits", "augmented_edits", *FRAME_STAGES)
ARMS = ("real_only", "uniform", "main", "geometry_breaking", "oracle", "augmented")


def stage_keys(overrides, tmp_path) -> dict[str, str]:
    return {p.stage.key: p.key for p in plan(compose_config(["experiment=emma", *overrides], tmp_path))}


def test_the_data_stages_cache_keys_do_not_hold_the_policy_config(tmp_path):
    base = stage_keys([], tmp_path)
    for policy in (["model.view_width=32"], ["model.planner.hidden_size=64"], ["method.vlm_lr=1e-3"]):
        changed = stage_keys(policy, tmp_path)
        assert [changed[k] == base[k] for k in DATA_STAGES + ("generator",)] == [True] * 12, policy
        assert not any(changed[k] == base[k] for k in ARMS), policy  # the arms train the policy: they rerun
    generator = stage_keys(["stages.generator.model.block_out_channels=[8,16]"], tmp_path)
    assert generator["generator"] != base["generator"] and generator["generated"] != base["generated"]
    assert generator["uniform"] != base["uniform"] and generator["main"] != base["main"]  # they read its edits
    assert [generator[k] == base[k] for k in ("demos", "pool", "oracle_edits", "augmented_edits", "oracle")] == \
        [True] * 5
    frames = stage_keys(["emma.frame_episodes=4"], tmp_path)
    assert all(frames[k] != base[k] for k in (*FRAME_STAGES, *ARMS))  # the arms read the frames
    assert all(frames[k] == base[k] for k in ("demos", "pool", "generator", "generated", "oracle_edits"))
    augmentation = stage_keys(["stages.augmented_edits.method.augmentation.hue=0.2"], tmp_path)
    assert augmentation["augmented_edits"] != base["augmented_edits"] and augmentation["augmented"] != base["augmented"]
    assert augmentation["generated"] == base["generated"]


def reset_seeds(seed, tmp_path) -> dict[str, list[int]]:
    """Every reset seed a stage of `experiment=emma seed=<seed>` uses: its data's seeds, or an arm's closed-loop
    ones."""
    from hydra.utils import instantiate

    seeds = {}
    for planned in plan(compose_config(["experiment=emma", f"seed={seed}"], tmp_path)):
        data, key = planned.data, planned.stage.key
        if key in ("demos", "pool", *FRAME_STAGES):
            seeds[key] = instantiate(data).seeds
        elif key in ARMS:
            seeds[key] = [data.eval_seed_start + i for i in range(data.eval_episodes)]
    return seeds


def test_the_seed_reaches_the_layouts_of_every_data_stage_and_the_evaluation(tmp_path):
    first, second = reset_seeds(0, tmp_path), reset_seeds(1, tmp_path)
    assert set(first) == {"demos", "pool", *FRAME_STAGES, *ARMS}
    for key in first:
        assert not set(first[key]) & set(second[key]), key  # another seed, other layouts
    assert first["demos"] == list(range(8)) and second["demos"] == list(range(10000, 10008))
    assert not set(first["demos"]) & set(first["pool"])  # within a seed, the pool never renders a demonstration
    assert len({tuple(first[k]) for k in FRAME_STAGES}) == 1  # the offline splits share their layouts
    assert all(s >= 1_000_000 for k in (*FRAME_STAGES, *ARMS) for s in first[k])  # held-out (val) layouts
    assert not set(first["frames_demo"]) & set(first["real_only"])  # offline frames are not closed-loop layouts
