from posttrain.generation.sampling import Generation, eval_mode, generate, sampling_logprobs, sampling_probs
from posttrain.generation.speculative import SpeculativeOutput, speculative_generate

__all__ = ["Generation", "SpeculativeOutput", "eval_mode", "generate", "sampling_logprobs", "sampling_probs",
           "speculative_generate"]
