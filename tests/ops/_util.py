"""Helpers shared by the op tests."""
import torch

OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def raises_naming(fn, name: str):
    """Assert fn raises a Python exception whose message names the offending argument."""
    try:
        fn()
    except (TypeError, ValueError, IndexError, RuntimeError) as err:
        assert name in str(err), f"message does not name {name!r}: {err}"
        return
    raise AssertionError(f"no exception for bad {name}")


def strided(x: torch.Tensor) -> torch.Tensor:
    """The same values laid out with a row stride twice the row length (non-contiguous)."""
    big = torch.empty(x.shape[0], 2 * x.shape[-1], dtype=x.dtype)
    big[:, ::2] = x
    return big[:, ::2]
