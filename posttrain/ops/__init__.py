"""Compiled ops with their torch references. Each op's module holds the reference and the dispatching wrapper."""
from posttrain.ops.speculative_verify import speculative_verify
from posttrain.ops.token_divergence import token_divergence
from posttrain.ops.token_logprobs import lm_head_logprobs, sequence_logprob_sums, token_logprobs
from posttrain.ops.token_sampling import sample_k_tokens

__all__ = ["token_logprobs", "lm_head_logprobs", "sequence_logprob_sums", "token_divergence", "sample_k_tokens",
           "speculative_verify"]
