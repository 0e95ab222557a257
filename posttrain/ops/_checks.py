"""Argument checks shared by the public wrappers: the same clear exception whichever backend runs the op."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
INDEX_DTYPES = (torch.int64, torch.int32)


def check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def check_float(x, name: str) -> None:
    check_tensor(x, name)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16, float16 or float64, got {x.dtype}")


def check_index(x, name: str) -> None:
    check_tensor(x, name)
    if x.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be int64 or int32, got {x.dtype}")


def check_dim(x, dim: int, name: str) -> None:
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")


def check_size(x, dim: int, size: int, name: str) -> None:
    if x.shape[dim] != size:
        raise ValueError(f"{name} must have size {size} in dimension {dim}, got shape {tuple(x.shape)}")


def check_same_device(x, ref, name: str, refname: str) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {refname} ({ref.device}), got {x.device}")


def check_temperature(t) -> None:
    if not (isinstance(t, (int, float)) and t > 0 and t < float("inf")):
        raise ValueError(f"temperature must be a finite positive number, got {t!r}")


def can_inspect_values() -> bool:
    """Value checks read data; skip them while tracing (the kernels check again)."""
    return not torch.compiler.is_compiling()


def check_ids_in_range(ids, vocab: int, name: str, ignore_index: int | None = None) -> None:
    if ids.numel() == 0 or not can_inspect_values() or ids.device.type == "meta":
        return
    valid = (ids >= 0) & (ids < vocab)
    if ignore_index is not None:
        valid |= ids == ignore_index
    if not bool(valid.all()):
        bad = ids[~valid][0].item()
        raise IndexError(f"{name} holds {bad}, out of range for a vocabulary of {vocab}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation/output dtype: float64 stays float64 (for gradcheck), everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
