"""experiment=emma's configuration errors name their keys before anything is collected or trained (Hydra wraps the
ConfigError of a stage's constructor in its InstantiationException; the message is kept)."""
import pytest

from posttrain.pipeline import train
from tests.helpers import compose_config


def test_an_unknown_appearance_set_names_the_key(tmp_path):
    cfg = compose_config(["experiment=emma", "debug=tiny", "env.appearance=no_such_set"], tmp_path)
    with pytest.raises(Exception, match=r"env\.appearance: unknown appearance set 'no_such_set'"):
        train(cfg)


def test_an_unknown_attribute_value_names_the_key(tmp_path):
    cfg = compose_config(["experiment=emma", "debug=tiny", "env.appearance={object_color:gold}"], tmp_path)
    with pytest.raises(Exception, match=r"env\.appearance\.object_color: unknown value 'gold'"):
        train(cfg)
