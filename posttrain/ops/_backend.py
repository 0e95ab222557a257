"""Loads the compiled extension once and decides, per call, whether ops run it or the torch reference.

POSTTRAIN_OPS=auto (default) uses the extension when it is built, except on CUDA tensors while the CUDA kernels
are unverified (see CUDA_KERNELS_VERIFIED), else the reference; POSTTRAIN_OPS=ext insists on the extension on every
device (an error if it is missing); POSTTRAIN_OPS=torch forces the reference.
Tests pin a backend with the `force()` context manager.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading

import torch  # loads libc10/libtorch before the extension

# The CUDA kernels have been compile-checked but never run on a GPU (docs/kernels.md, "Status of the CUDA kernels").
# Until benchmarks/gpu_check.sh passes on a GPU, POSTTRAIN_OPS=auto sends CUDA tensors to the torch references;
# POSTTRAIN_OPS=ext opts in. Set this to True, with the GPU figures in docs/kernels.md, once that run passes.
CUDA_KERNELS_VERIFIED = False

_VALID = ("auto", "ext", "torch")
_state = threading.local()
_ext = None
_ext_error: Exception | None = None
_loaded = False
_log = logging.getLogger(__name__)
_gate_lock = threading.Lock()
_gate_logged = False
_cuda_kernels = False


def extension():
    """The imported posttrain._C module, or None when it is not built."""
    global _ext, _ext_error, _loaded, _cuda_kernels
    if not _loaded:
        _loaded = True
        try:
            from posttrain import _C  # noqa: F401  (importing registers torch.ops.posttrain.*)

            _ext = _C
            _cuda_kernels = bool(_C.build_info().get("cuda", False))  # read once: ops ask on every call
        except ImportError as err:  # not built: the torch reference serves every op
            _ext_error = err
    return _ext


def mode() -> str:
    forced = getattr(_state, "mode", None)
    if forced is not None:
        return forced
    value = os.environ.get("POSTTRAIN_OPS", "auto").lower()
    if value not in _VALID:
        raise ValueError(f"POSTTRAIN_OPS must be one of {_VALID}, got {value!r}")
    return value


def use_extension(device: torch.device | None = None) -> bool:
    """True when a call on tensors of `device` should dispatch to torch.ops.posttrain."""
    m = mode()
    if m == "torch":
        return False
    ext = extension()
    if m == "ext":
        if ext is None:
            raise RuntimeError(f"POSTTRAIN_OPS=ext but posttrain._C could not be imported: {_ext_error}")
        if device is not None and device.type == "cuda" and not _has_cuda_kernels():
            raise RuntimeError("POSTTRAIN_OPS=ext on a CUDA tensor, but posttrain._C was built without its CUDA "
                               "kernels (torch without CUDA, or nvcc not found when it was built)")
        return True
    if ext is None:
        return False
    if device is not None and device.type == "cuda" and not (CUDA_KERNELS_VERIFIED and _has_cuda_kernels()):
        _log_gate_once()
        return False
    return True


def _has_cuda_kernels() -> bool:
    return extension() is not None and bool(_cuda_kernels)


def _log_gate_once():
    global _gate_logged
    if torch.compiler.is_compiling():  # no logging inside a traced graph; the eager call logs
        return
    with _gate_lock:
        if _gate_logged:
            return
        _gate_logged = True
    _log.warning("posttrain ops: CUDA tensors run the torch references (the CUDA kernels are not verified on a GPU "
                 "yet, see docs/kernels.md); set POSTTRAIN_OPS=ext to use them")


def build_info() -> dict:
    ext = extension()
    return {"built": False, "error": str(_ext_error)} if ext is None else {"built": True, **ext.build_info()}


@contextlib.contextmanager
def force(backend: str):
    """Pin the backend ('ext' or 'torch' or 'auto') for the current thread."""
    if backend not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {backend!r}")
    previous = getattr(_state, "mode", None)
    _state.mode = backend
    try:
        yield
    finally:
        _state.mode = previous
