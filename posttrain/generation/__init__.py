from posttrain.generation.sampling import Generation, generate, sampling_logprobs

__all__ = ["Generation", "generate", "sampling_logprobs"]
