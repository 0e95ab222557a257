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


DATA_STAGES = ("demos", "pool", "generated", "oracle_edits", "breaking_edits", "augmented_edits")
ARMS = ("real_only", "uniform", "main", "geometry_breaking", "oracle", "augmented")


def stage_keys(overrides, tmp_path) -> dict[str, str]:
    return {p.stage.key: p.key for p in plan(compose_config(["experiment=emma", *overrides], tmp_path))}


def test_the_data_stages_cache_keys_do_not_hold_the_policy_config(tmp_path):
    base = stage_keys([], tmp_path)
    for policy in (["model.view_width=32"], ["model.planner.hidden_size=64"], ["method.vlm_lr=1e-3"]):
        changed = stage_keys(policy, tmp_path)
        assert [changed[k] == base[k] for k in DATA_STAGES + ("generator",)] == [True] * 7, policy
        assert not any(changed[k] == base[k] for k in ARMS), policy  # the arms train the policy: they rerun
    generator = stage_keys(["stages.generator.model.block_out_channels=[8,16]"], tmp_path)
    assert generator["generator"] != base["generator"] and generator["generated"] != base["generated"]
    assert generator["uniform"] != base["uniform"] and generator["main"] != base["main"]  # they read its edits
    assert [generator[k] == base[k] for k in ("demos", "pool", "oracle_edits", "augmented_edits", "oracle")] == \
        [True] * 5
    augmentation = stage_keys(["stages.augmented_edits.method.augmentation.hue=0.2"], tmp_path)
    assert augmentation["augmented_edits"] != base["augmented_edits"] and augmentation["augmented"] != base["augmented"]
    assert augmentation["generated"] == base["generated"]
