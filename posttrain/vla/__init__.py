"""Robot-policy pieces of InternVLA-M1 beside its model (`posttrain.models.vla`): the spatial prompts, the action
normalisation statistics and the closed-loop evaluator."""
