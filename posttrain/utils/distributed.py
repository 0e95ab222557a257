"""The few collectives the training loops need to stay symmetric across processes (DDP, FSDP): agreeing on a count,
summing a tensor and averaging logged values. Each is a no-op without an initialised process group of more than one
process."""
from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agreed_max(count: int, device) -> int:
    """The largest `count` over all processes (an all_reduce MAX): every process calls it at the same point."""
    if world_size() == 1:
        return count
    value = torch.tensor(count, dtype=torch.long, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `tensor` over all processes (an all_reduce SUM, in place; on the device the backend
    needs, e.g. CUDA for NCCL): every process calls it at the same point with the same shape."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def weighted_means(metrics: dict[str, tuple[object, float]]) -> dict:
    """{name: (value, weight)} of this process -> {name: Σ_p w_p v_p / Σ_p w_p} over every process that reported
    the name with a weight > 0 (one all_gather_object). Processes may report different names (a process that made
    no update has no loss): a name missing on a process does not count there. Alone: the values as given, those of
    weight 0 left out."""
    if world_size() == 1:
        return {name: value for name, (value, weight) in metrics.items() if weight > 0}
    local = {name: (float(value), float(weight)) for name, (value, weight) in metrics.items() if weight > 0}
    parts: list[dict | None] = [None] * world_size()
    dist.all_gather_object(parts, local)
    totals: dict[str, list[float]] = {}
    for part in parts:
        for name, (value, weight) in part.items():
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += value * weight
            total[1] += weight
    return {name: value / weight for name, (value, weight) in sorted(totals.items())}
