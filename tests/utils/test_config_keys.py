"""Option dicts: an unknown key is an error naming its full dotted key, wherever a module receives one."""
import pytest

from posttrain.models.builders import tiny_llama
from posttrain.utils.config import ConfigError, check_keys, with_defaults

TINY = {"hidden_size": 32, "num_heads": 2, "num_layers": 1, "intermediate_size": 64}


def test_check_keys_and_defaults():
    assert check_keys(None, ["a"], "method.x") == {}
    assert with_defaults({"a": 2}, {"a": 1, "b": 0}, "method.x") == {"a": 2, "b": 0}
    with pytest.raises(ConfigError, match=r"^method\.generation\.top_kk: unknown key; known: \['max_new_tokens', "
                                          r"'temperature'\]"):
        with_defaults({"top_kk": 5}, {"temperature": 1.0, "max_new_tokens": 8}, "method.generation")


def module(name, **kwargs):
    from hydra.utils import get_class

    from posttrain.rewards import ArithmeticVerifier

    cls = get_class(name)
    model, tokenizer = tiny_llama(**TINY)
    if name.split(".")[1] in ("grpo", "nft", "rft", "spark"):
        kwargs["reward"] = ArithmeticVerifier()
    return cls(model, tokenizer, **kwargs)


@pytest.mark.parametrize("name, kwargs, key", [
    ("lightning_modules.grpo.GRPOModule", {"generation": {"top_kk": 5}}, "method.generation.top_kk"),
    ("lightning_modules.nft.NFTModule", {"generation": {"top_p": 0.9}}, "method.generation.top_p"),
    ("lightning_modules.spark.SparkModule", {"judge_eval": {"splitt": "val"}}, "method.judge_eval.splitt"),
    ("lightning_modules.spin.SPINModule", {"generation": {"temprature": 1.0}}, "method.generation.temprature"),
    ("lightning_modules.distillspec.DistillSpecModule", {"speculative": {"gama": 3}}, "method.speculative.gama"),
    ("lightning_modules.grpo.GRPOModule", {"num_samples": 1}, "method.num_samples"),
])
def test_modules_reject_unknown_option_keys(name, kwargs, key):
    if "distillspec" in name:
        kwargs["teacher"] = tiny_llama(**TINY)[0]
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ":"):
        module(name, **kwargs)


def test_ppo_and_judge_options_name_the_full_key():
    from lightning_modules import ppo as ppo_lib

    with pytest.raises(ConfigError, match=r"^method\.ppo\.lamda: unknown key"):
        ppo_lib.settings({"lamda": 0.9}, None)
    with pytest.raises(ConfigError, match=r"^method\.generation\.top_k: unknown key"):
        ppo_lib.settings(None, {"top_k": 5})
