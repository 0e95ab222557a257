"""Whether a module's weights can fit the device it is about to train on, in the dtype they were built in, checked
before anything is moved there, so that a model too large for `model.dtype` stops with an error naming the key
rather than an out-of-memory crash minutes later."""
from __future__ import annotations

import os

import torch
from torch import nn

from posttrain.utils.config import check

GIB = 2**30


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of `device` (a GPU's total, the host's physical memory for the CPU); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def weight_bytes(module: nn.Module, sharded: set[int] | None = None, shards: int = 1) -> int:
    """Bytes of `module`'s parameters and buffers, each counted once; those whose id is in `sharded` count
    1 / `shards` (FSDP keeps that fraction of them on each device)."""
    sharded, total, seen = sharded or set(), 0, set()
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size = tensor.numel() * tensor.element_size()
        total += size // shards if id(tensor) in sharded else size
    return total


def check_fits(module: nn.Module, device: torch.device, sharded: set[int] | None = None, shards: int = 1) -> None:
    """Raises a ConfigError naming `model.dtype` when the weights alone (frozen copies included) exceed the device's
    memory, or when the device cannot compute in their dtype (bfloat16 on a GPU without it)."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})
    if device.type == "cuda" and torch.bfloat16 in {p.dtype for p in module.parameters()}:
        check(torch.cuda.is_bf16_supported(), "model.dtype",
              f"{torch.cuda.get_device_name(device)} does not support bfloat16; use float16 or float32")
    needed, available = weight_bytes(module, sharded, shards), device_memory(device)
    check(available is None or needed <= available, "model.dtype",
          f"the weights alone take {needed / GIB:.1f} GiB in {'/'.join(dtypes)}, more than the "
          f"{(available or 0) / GIB:.1f} GiB of {device}; use model.dtype=bfloat16 (half of float32), shard the "
          f"policy over more devices (trainer=fsdp) or a smaller model")
