"""Compiled ops with their torch references. Each op's module holds the reference and the dispatching wrapper."""
from posttrain.ops.token_logprobs import token_logprobs

__all__ = ["token_logprobs"]
