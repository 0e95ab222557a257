"""`build_agent(cfg)`: an `agent` config (conf/agent/: scripted | hf | openai) as a ChatModel."""
from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from posttrain.agents.base import ChatModel
from posttrain.utils.config import ConfigError, check


def rekey(error: ConfigError, key: str) -> ConfigError:
    """The agent classes name their settings `agent.<field>`; an agent configured elsewhere (a judge) names its key."""
    text = str(error)
    return ConfigError(key + text[len("agent"):]) if key != "agent" and text.startswith("agent.") else error


def build_agent(cfg, key: str = "agent") -> ChatModel:
    """`cfg` is the agent's config (a `_target_` node), a plain dict of it, or an already built ChatModel (returned
    as is, so a method can take either)."""
    if isinstance(cfg, ChatModel):
        return cfg
    check(cfg is not None, key, "no agent configured (agent=scripted | hf | openai)")
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    check("_target_" in node, f"{key}._target_", "missing: an agent config names its class")
    try:
        agent = instantiate(node, _convert_="all")
    except InstantiationException as error:  # Hydra wraps the ConfigError that names the key: raise that one
        cause = error.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        raise (rekey(cause, key) if cause else error) from None
    check(isinstance(agent, ChatModel), f"{key}._target_", f"{node._target_} is not a ChatModel")
    return agent
