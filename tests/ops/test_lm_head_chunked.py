"""The torch path of the fused lm-head: same values and gradients as materialising the logits, in (N, C) blocks."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from posttrain.ops import _backend, lm_head_chunked, lm_head_logprobs
from posttrain.ops.lm_head_chunked import block_columns, lm_head_logprobs_chunked
from posttrain.ops.token_logprobs import lm_head_logprobs_reference


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _inputs(n=40, h=16, v=1000, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype).requires_grad_()
    weight = (0.3 * torch.randn(v, h, generator=g)).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=g)
    labels[3] = -100
    return hidden, weight, labels


@pytest.mark.parametrize("chunk_size", [0, 1, 7, 999, 1000, 5000])
def test_matches_reference_values_and_gradients(chunk_size):
    hidden, weight, labels = _inputs()
    g = torch.randn(40)
    out = lm_head_logprobs_chunked(hidden, weight, labels, -100, chunk_size)
    gh, gw = torch.autograd.grad((out * g).sum(), (hidden, weight))
    ref = lm_head_logprobs_reference(hidden, weight, labels)[0]
    rh, rw = torch.autograd.grad((ref * g).sum(), (hidden, weight))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gw, rw)
    assert out[3] == 0 and gh[3].abs().sum() == 0


def test_gradcheck_float64():
    hidden, weight, labels = _inputs(n=6, h=5, v=11, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: lm_head_logprobs_chunked(a, b, labels, -100, 4), (hidden, weight))


def test_never_forms_an_n_by_v_tensor(monkeypatch):
    monkeypatch.setattr(lm_head_chunked, "_BLOCK_LOGITS", 40 * 100)  # chunk_size = 0 picks 100 columns at N = 40
    hidden, weight, labels = _inputs()
    with LargestTensor() as spy:
        out = lm_head_logprobs_chunked(hidden, weight, labels)
        out.sum().backward()
    assert spy.largest <= max(40 * 100, weight.numel()), spy.largest  # the (V, H) weight gradient is returned
    with LargestTensor() as spy:
        lm_head_logprobs_reference(hidden, weight, labels)[0].sum().backward()
    assert spy.largest >= 40 * 1000  # the materialising path does form (N, V)


def test_block_columns():
    assert block_columns(4096, 128256, 0) == 1024
    assert block_columns(1, 50, 0) == 50
    assert block_columns(10, 50, 7) == 7 and block_columns(10, 50, 80) == 50


def test_autocast_does_not_change_the_dtype_of_the_logits():
    hidden, weight, labels = _inputs()
    plain = lm_head_logprobs_chunked(hidden, weight, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = lm_head_logprobs_chunked(hidden, weight, labels)
    torch.testing.assert_close(under, plain)


def test_public_function_takes_it_without_the_extension():
    hidden, weight, labels = _inputs(dtype=torch.bfloat16)
    with _backend.force("torch"):
        out = lm_head_logprobs(hidden, weight, labels, chunk_size=64)
    torch.testing.assert_close(out, lm_head_logprobs_chunked(hidden, weight, labels, -100, 64), rtol=0, atol=0)
