"""train(cfg): an experiment as an ordered mapping of named stages (see `stages.py` for the schema)."""
from posttrain.pipeline.run import plan, register_resolvers, train

__all__ = ["plan", "register_resolvers", "train"]
