"""Loads the compiled extension once and decides, per call, whether ops run it or the torch reference.

POSTTRAIN_OPS=auto (default) uses the extension when it is built, else the reference;
POSTTRAIN_OPS=ext insists on the extension (an error if it is missing); POSTTRAIN_OPS=torch forces the reference.
Tests pin a backend with the `force()` context manager.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch  # noqa: F401  (loads libc10/libtorch before the extension)

_VALID = ("auto", "ext", "torch")
_state = threading.local()
_ext = None
_ext_error: Exception | None = None
_loaded = False


def extension():
    """The imported posttrain._C module, or None when it is not built."""
    global _ext, _ext_error, _loaded
    if not _loaded:
        _loaded = True
        try:
            from posttrain import _C  # noqa: F401  (importing registers torch.ops.posttrain.*)

            _ext = _C
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


def use_extension() -> bool:
    """True when the current call should dispatch to torch.ops.posttrain."""
    m = mode()
    if m == "torch":
        return False
    ext = extension()
    if ext is None and m == "ext":
        raise RuntimeError(f"POSTTRAIN_OPS=ext but posttrain._C could not be imported: {_ext_error}")
    return ext is not None


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
