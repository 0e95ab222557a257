"""train(cfg): an experiment as an ordered mapping of named stages (see `stages.py` for the schema);
evaluate(cfg): one evaluation of a saved model or checkpoint (`evaluate.py`)."""
from posttrain.pipeline.evaluate import evaluate
from posttrain.pipeline.run import plan, register_resolvers, train

__all__ = ["evaluate", "plan", "register_resolvers", "train"]
