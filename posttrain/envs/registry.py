"""The environment registry: `env=numberline` / `env=blackjack` / `env=metaworld_pick_place` (conf/env/) name an
entry by its `id`; the rest of the env config are the constructor's keyword arguments. The same classes are
registered with Gymnasium (`gymnasium.make("posttrain/NumberLine-v0")`). Meta-World is imported only when built
(it loads MuJoCo and chooses its GL backend)."""
from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym

from posttrain.envs.blackjack import BlackjackEnv
from posttrain.envs.numberline import NumberLineEnv
from posttrain.utils.config import ConfigError


def metaworld_env(**kwargs) -> gym.Env:
    from posttrain.envs.metaworld import MetaWorldEnv

    return MetaWorldEnv(**kwargs)


ENVS = {"numberline": NumberLineEnv, "blackjack": BlackjackEnv, "metaworld": metaworld_env}
GYM_IDS = {"numberline": "posttrain/NumberLine-v0", "blackjack": "posttrain/Blackjack-v0",
           "metaworld": "posttrain/MetaWorld-v0"}
ENTRY_POINTS = {"metaworld": "posttrain.envs.metaworld:MetaWorldEnv"}
SPLIT_ENVS = ("metaworld",)  # their constructor takes the split itself (train, val, test_combos, ...)


def make_env(config: Mapping, where: str = "env", split: str | None = None, **overrides) -> gym.Env:
    """The environment `config["id"]` with the config's other keys (and `overrides`) as its arguments; for the split
    "test_ood" the config's `ood` block is applied over them (e.g. NumberLine's [10, 50]). An unknown id or argument
    is an error naming its key under `where`. Environments of SPLIT_ENVS get `split` as their own argument."""
    options = {**dict(config), **overrides}
    ood = options.pop("ood", None) or {}
    if split == "test_ood":
        options.update(dict(ood))
    env_id = options.pop("id", None)
    if env_id not in ENVS:
        raise ConfigError(f"{where}.id: unknown environment {env_id!r}; registered: {sorted(ENVS)}")
    if env_id in SPLIT_ENVS and split is not None:
        options["split"] = split
    try:
        return ENVS[env_id](**options, where=where)
    except TypeError as err:
        raise ConfigError(f"{where}: {err} (environment {env_id!r})") from err


for _key, _gym_id in GYM_IDS.items():
    if _gym_id not in gym.registry:
        gym.register(_gym_id, entry_point=ENTRY_POINTS.get(_key, ENVS[_key]))
