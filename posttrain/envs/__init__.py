"""Gymnasium-API environments: NumberLine and Blackjack (RL4VLM's gym_cards tasks, a text and an image
observation), each with its original and GFlowVLM's strictly positive rewards and a scripted expert; and PRELUDE's
edit-and-cost interaction (`PreludeEnv`, text only, built from contexts and a simulated user rather than from
`conf/env/`)."""
from posttrain.envs.blackjack import BlackjackEnv
from posttrain.envs.numberline import NumberLineEnv
from posttrain.envs.prelude import PreludeEnv
from posttrain.envs.registry import ENVS, make_env

__all__ = ["ENVS", "BlackjackEnv", "NumberLineEnv", "PreludeEnv", "make_env"]
