import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.ops import _backend, lm_head_logprobs, sequence_logprob_sums, token_logprobs
from posttrain.ops.token_logprobs import token_logprobs_reference
from tests.ops._util import OPCHECK_TESTS, raises_naming, strided
from tests.ops.conftest import needs_cuda, needs_ext


def test_hand_computed(backend):
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, float("-inf")]])
    labels = torch.tensor([2, 1])
    out = token_logprobs(logits, labels)
    expected = torch.tensor([-math.log(4.0), 2.0 - math.log(math.e + math.e**2 + math.e**3)])
    torch.testing.assert_close(out, expected)


def test_ignore_index_and_leading_dims(backend):
    logits = torch.randn(2, 37, 769)  # (B, T, V)
    labels = torch.randint(0, 769, (2, 37))
    labels[0, :5] = -100
    out = token_logprobs(logits, labels)
    assert out.shape == (2, 37) and out.dtype == torch.float32
    assert (out[0, :5] == 0).all()
    ref = token_logprobs_reference(logits.reshape(-1, 769), labels.reshape(-1))[0].reshape(2, 37)
    torch.testing.assert_close(out, ref)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("V", [1, 7, 769, 4100])
def test_ext_matches_reference(dtype, V):
    torch.manual_seed(V)
    logits = (3 * torch.randn(23, V)).to(dtype).requires_grad_()
    logits.data[0, : V // 2] = float("-inf")  # masked vocabulary entries
    labels = torch.randint(0, V, (23,))
    labels[0] = V - 1
    labels[3] = -100
    g = torch.randn(23)
    outs = []
    for b in ("torch", "ext"):
        with _backend.force(b):
            logits.grad = None
            out = token_logprobs(logits, labels)
            (out * g).sum().backward()
            outs.append((out.detach(), logits.grad.clone()))
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype in (torch.float32, torch.float64) else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
    torch.testing.assert_close(outs[1][1].float(), outs[0][1].float(), **tol)


def test_strided_input(backend):
    x = torch.randn(9, 769)
    labels = torch.randint(0, 769, (9,))
    torch.testing.assert_close(token_logprobs(strided(x), labels), token_logprobs(x.contiguous(), labels))
    torch.testing.assert_close(token_logprobs(x.t().contiguous().t(), labels), token_logprobs(x, labels))


def test_gradcheck_float64(backend):
    x = torch.randn(5, 13, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 12, -100, 3, 7])
    assert torch.autograd.gradcheck(lambda t: token_logprobs(t, labels), (x,))


@needs_ext
def test_gradcheck_lse_output():
    x = torch.randn(4, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, -100, 10, 0])
    assert torch.autograd.gradcheck(lambda t: torch.ops.posttrain.token_logprobs(t, labels, -100), (x,))


def test_bf16_error_within_2x_torch(backend):
    torch.manual_seed(0)
    x32 = 4 * torch.randn(64, 769)
    labels = torch.randint(0, 769, (64,))
    xb = x32.bfloat16().requires_grad_()
    ref = x32.clone().requires_grad_()
    r = token_logprobs_reference(ref, labels)[0]
    r.sum().backward()
    torch_bf16 = torch.log_softmax(xb, -1).gather(-1, labels[:, None]).squeeze(-1)  # torch's own bf16 path
    (tg,) = torch.autograd.grad(torch_bf16.sum(), xb)
    ours = token_logprobs(xb, labels)
    (og,) = torch.autograd.grad(ours.sum(), xb)
    err_ours = (ours.float() - r.detach()).abs().max()
    err_torch = (torch_bf16.float() - r.detach()).abs().max()
    assert err_ours <= 2 * err_torch + 1e-6
    assert (og.float() - ref.grad).abs().max() <= 2 * (tg.float() - ref.grad).abs().max() + 1e-6


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype):
    x = torch.randn(6, 769, dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 768, -100, 5, 6, 7])
    torch.library.opcheck(torch.ops.posttrain.token_logprobs.default, (x, labels, -100), test_utils=OPCHECK_TESTS)
    h = torch.randn(6, 16, dtype=dtype, requires_grad=True)
    w = torch.randn(769, 16, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.posttrain.lm_head_logprobs.default, (h, w, labels, -100, 4),
                          test_utils=OPCHECK_TESTS)


@needs_ext
def test_torch_compile():
    x = torch.randn(8, 769, requires_grad=True)
    labels = torch.randint(0, 769, (8,))
    f = torch.compile(lambda t, y: token_logprobs(t, y).sum(), fullgraph=True, backend="aot_eager")
    with _backend.force("ext"):
        (g,) = torch.autograd.grad(f(x, labels), x)
    (r,) = torch.autograd.grad(token_logprobs_reference(x, labels)[0].sum(), x)
    torch.testing.assert_close(g, r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_lm_head_matches_materialised(backend, dtype):
    torch.manual_seed(1)
    h = torch.randn(37, 24, dtype=dtype, requires_grad=True)
    w = (0.3 * torch.randn(769, 24)).to(dtype).requires_grad_()
    labels = torch.randint(0, 769, (37,))
    labels[4] = -100
    g = torch.randn(37, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    out = lm_head_logprobs(h, w, labels, chunk_size=5)
    gh, gw = torch.autograd.grad((out * g).sum(), (h, w))
    with _backend.force("torch"):
        ref = token_logprobs(h @ w.t(), labels)
    rh, rw = torch.autograd.grad((ref * g).sum(), (h, w))
    tol = {} if dtype != torch.bfloat16 else {"atol": 5e-2, "rtol": 5e-2}
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gh, rh, **tol)
    torch.testing.assert_close(gw, rw, **tol)


def test_lm_head_gradcheck(backend):
    h = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 10, -100, 3, 4, 5])
    assert torch.autograd.gradcheck(lambda a, b: lm_head_logprobs(a, b, labels, chunk_size=4), (h, w))


def test_sequence_logprob_sums():
    lp = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    torch.testing.assert_close(sequence_logprob_sums(lp, mask), torch.tensor([-3.0, -1.0]))
    raises_naming(lambda: sequence_logprob_sums(lp, mask[:, :2]), "mask")


@needs_ext
def test_direct_op_errors():
    x = torch.randn(4, 10)
    raises_naming(lambda: torch.ops.posttrain.token_logprobs(x, torch.tensor([0, 1, 2, 10]), -100), "labels")
    raises_naming(lambda: torch.ops.posttrain.token_logprobs(x.int(), torch.tensor([0, 1, 2, 3]), -100), "logits")
    raises_naming(lambda: torch.ops.posttrain.token_logprobs(x, torch.tensor([0, 1, 2]), -100), "labels")
    raises_naming(lambda: torch.ops.posttrain.token_logprobs(x[0], torch.tensor([0]), -100), "logits")


_dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32,
                           torch.bool])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5), v=st.integers(0, 40), ldtype=_dtypes, ydtype=_dtypes, yshift=st.integers(-3, 3),
       extra=st.integers(-1, 1), be=st.sampled_from(["torch", "ext"]))
def test_fuzz_inputs_never_crash(n, v, ldtype, ydtype, yshift, extra, be):
    if be == "ext" and _backend.extension() is None:
        return
    logits = torch.zeros(n, v).to(ldtype)
    labels = (torch.arange(max(n + extra, 0)) * 7 + yshift * max(v, 1)).to(ydtype)
    with _backend.force(be):
        try:
            out = token_logprobs(logits, labels)
        except (TypeError, ValueError, IndexError, RuntimeError) as err:
            assert any(k in str(err) for k in ("logits", "labels")), str(err)
            return
    assert out.shape == (n,)


@needs_cuda
@needs_ext
def test_cuda_matches_cpu():
    x = torch.randn(33, 769)
    labels = torch.randint(0, 769, (33,))
    with _backend.force("ext"):
        torch.testing.assert_close(token_logprobs(x.cuda(), labels.cuda()).cpu(), token_logprobs(x, labels))
