"""The CUDA kernels against the CPU kernels and the torch references, on a GPU (benchmarks/gpu_check.sh runs these).

Each test pins POSTTRAIN_OPS=ext, so it runs the CUDA kernels whatever CUDA_KERNELS_VERIFIED says; the gate itself
is checked once on a real CUDA tensor. Shapes include the vocabulary of current models (V = 128256) so rows span
many thread blocks' worth of tiles.
"""
import importlib
import logging

import pytest
import torch

from posttrain.ops import (
    _backend,
    lm_head_logprobs,
    sample_k_tokens,
    speculative_verify,
    token_divergence,
    token_logprobs,
)
from posttrain.ops.lm_head_chunked import lm_head_logprobs_chunked
from posttrain.ops.token_divergence import KINDS
from tests.ops._util import OPCHECK_TESTS
from tests.ops.conftest import needs_cuda, needs_ext

token_logprobs_module = importlib.import_module("posttrain.ops.token_logprobs")  # the package re-exports the function
pytestmark = [needs_cuda, needs_ext, pytest.mark.cuda]
VOCABS = [7, 769, 4100, 128256]


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-5} if dtype in (torch.float32, torch.float64) else {"atol": 2e-2, "rtol": 2e-2}


def _logits(n, v, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(n, v, generator=g)).to(dtype)
    x[0, : v // 2] = float("-inf")
    return x


def test_build_has_cuda_kernels():
    assert _backend.build_info()["cuda"], "posttrain._C was built without CUDA: see setup.py's CUDA condition"


def test_auto_gate_on_a_real_cuda_tensor(monkeypatch, caplog):
    monkeypatch.setattr(_backend, "_gate_logged", False)
    monkeypatch.setattr(_backend, "CUDA_KERNELS_VERIFIED", False)
    reference = token_logprobs_module.token_logprobs_reference
    calls = []
    monkeypatch.setattr(token_logprobs_module, "token_logprobs_reference",
                        lambda *a: calls.append(a[0].device) or reference(*a))
    x, y = torch.randn(4, 9, device="cuda"), torch.randint(0, 9, (4,), device="cuda")
    with _backend.force("auto"), caplog.at_level(logging.WARNING, logger=_backend.__name__):
        token_logprobs(x, y)
        token_logprobs(x, y)
    assert len(calls) == 2 and calls[0].type == "cuda"
    assert sum("CUDA tensors run the torch references" in r.getMessage() for r in caplog.records) == 1
    with _backend.force("ext"):
        token_logprobs(x, y)
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("V", VOCABS)
def test_token_logprobs_forward_backward(dtype, V):
    x = _logits(23, V, dtype, V)
    labels = torch.randint(0, V, (23,), generator=torch.Generator().manual_seed(1))
    labels[0], labels[3] = V - 1, -100
    g = torch.randn(23)
    results = []
    for device in ("cpu", "cuda"):
        leaf = x.to(device).requires_grad_()
        with _backend.force("ext"):
            out = token_logprobs(leaf, labels.to(device))
            (out * g.to(device)).sum().backward()
        results.append((out.detach().cpu(), leaf.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], **_tol(dtype))
    torch.testing.assert_close(results[1][1].float(), results[0][1].float(), **_tol(dtype))
    assert results[1][0][3] == 0 and results[1][1][3].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lm_head_forward_backward(dtype):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(300, 64, generator=gen).to(dtype)
    w = (0.1 * torch.randn(128256, 64, generator=gen)).to(dtype)
    labels = torch.randint(0, 128256, (300,), generator=gen)
    labels[7] = -100
    g = torch.randn(300, generator=gen).cuda()
    hc, wc, lc = h.cuda().requires_grad_(), w.cuda().requires_grad_(), labels.cuda()
    with _backend.force("ext"):
        out = lm_head_logprobs(hc, wc, lc)
    gh, gw = torch.autograd.grad((out * g).sum(), (hc, wc))
    ref = lm_head_logprobs_chunked(hc, wc, lc)
    rh, rw = torch.autograd.grad((ref * g).sum(), (hc, wc))
    torch.testing.assert_close(out, ref, **_tol(dtype))
    torch.testing.assert_close(gh.float(), rh.float(), **_tol(dtype))
    torch.testing.assert_close(gw.float(), rw.float(), **_tol(dtype))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("V", [769, 128256])
def test_token_divergence_forward_backward(kind, V):
    s, t = _logits(9, V, torch.float32, 2), _logits(9, V, torch.float32, 3)
    s[0], t[0] = torch.randn(V), torch.randn(V)  # finite first rows (the -inf pattern above is for log-probs)
    results = []
    for device in ("cpu", "cuda"):
        leaf = s.to(device).requires_grad_()
        with _backend.force("ext"):
            out = token_divergence(leaf, t.to(device), kind, 0.3, 1.3)
            out.sum().backward()
        results.append((out.detach().cpu(), leaf.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (50, 1.0), (0, 0.9), (20, 0.9)])
@pytest.mark.parametrize("V", [769, 128256])
def test_sample_k_tokens_matches_cpu(top_k, top_p, V):
    x = _logits(17, V, torch.float32, 4)
    labels = torch.randint(0, V, (17,), generator=torch.Generator().manual_seed(5))
    u = torch.rand(17, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with _backend.force("ext"):
        a = sample_k_tokens(x.cuda(), labels.cuda(), 4, 1.3, top_k, top_p, uniforms=u.cuda())
        b = sample_k_tokens(x, labels, 4, 1.3, top_k, top_p, uniforms=u)
    assert torch.equal(a[0].cpu(), b[0])
    for got, want in zip(a[1:], b[1:]):
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mode", ["sample", "greedy", "lenient"])
@pytest.mark.parametrize("V", [769, 128256])
def test_speculative_verify_matches_cpu(mode, V):
    gen = torch.Generator().manual_seed(7)
    q = torch.softmax(torch.randn(8, 4, V, generator=gen), -1)
    t = torch.randn(8, 5, V, generator=gen)
    tok = torch.multinomial(q.reshape(-1, V), 1, generator=gen).reshape(8, 4)
    u = torch.rand(8, 5, dtype=torch.float64, generator=gen)
    with _backend.force("ext"):
        a = speculative_verify(tok.cuda(), q.cuda(), t.cuda(), u.cuda(), 1.0, mode, 0.5)
        b = speculative_verify(tok, q, t, u, 1.0, mode, 0.5)
    assert torch.equal(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1])
    torch.testing.assert_close(a[2].cpu(), b[2], atol=1e-5, rtol=1e-4)


def test_opcheck_on_cuda():
    x = torch.randn(5, 769, device="cuda", requires_grad=True)
    labels = torch.randint(0, 769, (5,), device="cuda")
    torch.library.opcheck(torch.ops.posttrain.token_logprobs.default, (x, labels, -100), test_utils=OPCHECK_TESTS)
    s, t = torch.randn(5, 769, device="cuda", requires_grad=True), torch.randn(5, 769, device="cuda")
    torch.library.opcheck(torch.ops.posttrain.token_divergence.default, (s, t, "jsd", 0.5, 1.0),
                          test_utils=OPCHECK_TESTS)


def test_torch_compile_on_cuda():
    x = torch.randn(8, 769, device="cuda", requires_grad=True)
    labels = torch.randint(0, 769, (8,), device="cuda")
    f = torch.compile(lambda t, y: token_logprobs(t, y).sum(), fullgraph=True)
    with _backend.force("ext"):
        (g,) = torch.autograd.grad(f(x, labels), x)
    with _backend.force("torch"):
        (r,) = torch.autograd.grad(token_logprobs(x, labels).sum(), x)
    torch.testing.assert_close(g, r)


def test_bad_device_mix_is_a_clean_error():
    x = torch.randn(4, 9, device="cuda")
    with _backend.force("ext"), pytest.raises(ValueError, match="labels"):
        token_logprobs(x, torch.zeros(4, dtype=torch.long))
