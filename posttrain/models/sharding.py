"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the trainable policy: sharding it over a device mesh, gathering
its parameters for generation, and a plain copy of a sharded model to save or hand to the next stage.

Under FSDP every forward of a sharded module is a collective (an all-gather of each block's parameters), so
processes must make the same forwards in the same order. Training forwards are (the online methods pad their
updates to the same count), generation's are not: each process samples until its own sequences end, and dynamic
sampling draws a different number of batches per process. `gathered` therefore unshards the whole policy once,
at a point every process reaches together (the start of a rollout step, of a validation), and keeps it unsharded
until the matching exit: the forwards in between are local.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, each sharded as one unit: the classes a transformers model names in
    `_no_split_modules` (its decoder layers, vision blocks)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names and m is not model]


def shard(model: nn.Module, mesh) -> nn.Module:
    """fully_shard each block of `model`, then the root (embeddings, final norm, lm-head) over `mesh`; in place."""
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


@contextmanager
def gathered(model: nn.Module):
    """Every parameter of a sharded `model` all-gathered on entry and kept whole until exit (forwards in between make
    no collective); re-entrant, and a no-op for a model that is not sharded. Entry and exit are collectives: every
    process must reach them together."""
    if not is_sharded(model) or getattr(model, "_posttrain_gathered", False):
        yield model
        return
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    model._posttrain_gathered = True
    try:
        yield model
    finally:
        model._posttrain_gathered = False
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict with whole tensors on every process (a collective when it is sharded)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def plain_copy(model: nn.Module) -> nn.Module:
    """A sharded `model` as an ordinary module of its original class with every parameter whole (a collective: every
    process calls it); an unsharded model is returned as it is."""
    if not is_sharded(model):
        return model
    state = full_state_dict(model)
    original = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.random.fork_rng(devices=[]):  # its throwaway initialisation must not move the run's random stream
        copy = original(model.config)  # a transformers model: its class builds from its config
    copy.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, assign=True)  # the saved dtypes
    copy.tie_weights()  # assign replaced tied parameters one name at a time
    copy.generation_config = model.generation_config
    return copy.train(model.training)
