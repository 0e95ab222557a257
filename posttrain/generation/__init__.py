from posttrain.generation.sampling import Generation, generate, sampling_logprobs, sampling_probs

__all__ = ["Generation", "generate", "sampling_logprobs", "sampling_probs"]
