"""Gymnasium-API environments with a text and an image observation: NumberLine and Blackjack (RL4VLM's gym_cards
tasks), each with its original and GFlowVLM's strictly positive rewards and a scripted expert."""
from posttrain.envs.blackjack import BlackjackEnv
from posttrain.envs.numberline import NumberLineEnv
from posttrain.envs.registry import ENVS, make_env

__all__ = ["ENVS", "BlackjackEnv", "NumberLineEnv", "make_env"]
