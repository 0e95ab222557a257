import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.ops import _backend, token_divergence
from posttrain.ops.token_divergence import KINDS, token_divergence_reference
from tests.ops._util import OPCHECK_TESTS, raises_naming, strided
from tests.ops.conftest import needs_cuda, needs_ext


def _two_point(a, b):
    return torch.tensor([[math.log(a), math.log(1 - a)]]), torch.tensor([[math.log(b), math.log(1 - b)]])


@pytest.mark.parametrize("kind", KINDS)
def test_hand_computed(backend, kind):
    q, p = 0.2, 0.6  # student, teacher
    s, t = _two_point(q, p)
    m = 0.5 * p + 0.5 * q
    expected = {
        "forward_kl": p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)),
        "reverse_kl": q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p)),
        "jsd": 0.5 * (p * math.log(p / m) + (1 - p) * math.log((1 - p) / (1 - m)))
        + 0.5 * (q * math.log(q / m) + (1 - q) * math.log((1 - q) / (1 - m))),
        "tvd": abs(p - q),
    }[kind]
    torch.testing.assert_close(token_divergence(s, t, kind, beta=0.5), torch.tensor([expected]))


@pytest.mark.parametrize("kind", KINDS)
def test_identical_is_zero_and_disjoint_support(backend, kind):
    x = torch.randn(3, 769)
    torch.testing.assert_close(token_divergence(x, x.clone(), kind), torch.zeros(3), atol=2e-6, rtol=0)
    a = torch.full((1, 4), float("-inf"))
    b = a.clone()
    a[0, :2], b[0, 2:] = 0.0, 0.0  # disjoint supports
    expected = {"forward_kl": math.inf, "reverse_kl": math.inf, "jsd": math.log(2), "tvd": 1.0}[kind]
    torch.testing.assert_close(token_divergence(a, b, kind), torch.tensor([expected]))


@needs_ext
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_ext_matches_reference(kind, dtype):
    torch.manual_seed(0)
    s = (2 * torch.randn(11, 769)).to(dtype).requires_grad_()
    t = (2 * torch.randn(11, 769)).to(dtype)
    s.data[1, :50] = float("-inf")  # masked entries shared by both rows keep every kind finite
    t[1, :50] = float("-inf")
    g = torch.randn(11, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    outs = []
    for b in ("torch", "ext"):
        with _backend.force(b):
            s.grad = None
            d = token_divergence(s, t, kind, beta=0.3, temperature=1.7)
            (d * g).sum().backward()
            outs.append((d.detach(), s.grad.float()))
    tol = {"atol": 1e-5, "rtol": 1e-4} if dtype in (torch.float32, torch.float64) else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tol)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(backend, kind):
    torch.manual_seed(1)
    s = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 9, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: token_divergence(x, t, kind, beta=0.3, temperature=1.5), (s,))


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_error_within_2x_torch(backend, kind):
    torch.manual_seed(2)
    s32, t32 = 3 * torch.randn(32, 769), 3 * torch.randn(32, 769)
    ref = token_divergence_reference(s32, t32, kind)
    # torch's own bf16 computation of the same formula, no upcast
    torch_bf16 = _bf16_reference(s32.bfloat16(), t32.bfloat16(), kind)
    ours = token_divergence(s32.bfloat16(), t32.bfloat16(), kind)
    assert (ours - ref).abs().max() <= 2 * (torch_bf16.float() - ref).abs().max() + 1e-6


def _bf16_reference(s, t, kind):
    lq, lp = torch.log_softmax(s, -1), torch.log_softmax(t, -1)  # bf16 throughout
    q, p = lq.exp(), lp.exp()
    if kind == "forward_kl":
        return (p * (lp - lq)).sum(-1)
    if kind == "reverse_kl":
        return (q * (lq - lp)).sum(-1)
    if kind == "jsd":
        lm = torch.logaddexp(lp + math.log(0.5), lq + math.log(0.5))
        return 0.5 * (p * (lp - lm)).sum(-1) + 0.5 * (q * (lq - lm)).sum(-1)
    return 0.5 * (p - q).abs().sum(-1)


def test_strided(backend):
    s, t = torch.randn(6, 769), torch.randn(6, 769)
    torch.testing.assert_close(token_divergence(strided(s), strided(t), "jsd"), token_divergence(s, t, "jsd"))


@needs_ext
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind):
    s = torch.randn(5, 769, requires_grad=True)
    t = torch.randn(5, 769)
    torch.library.opcheck(torch.ops.posttrain.token_divergence.default, (s, t, kind, 0.4, 1.3),
                          test_utils=OPCHECK_TESTS)


@needs_ext
def test_torch_compile():
    s, t = torch.randn(4, 769, requires_grad=True), torch.randn(4, 769)
    f = torch.compile(lambda a, b: token_divergence(a, b, "reverse_kl").sum(), fullgraph=True, backend="aot_eager")
    with _backend.force("ext"):
        (g,) = torch.autograd.grad(f(s, t), s)
    (r,) = torch.autograd.grad(token_divergence_reference(s, t, "reverse_kl").sum(), s)
    torch.testing.assert_close(g, r)


def test_bad_arguments(backend):
    s = torch.randn(3, 5)
    raises_naming(lambda: token_divergence(s, torch.randn(3, 6)), "teacher_logits")
    raises_naming(lambda: token_divergence(s, s.double()), "teacher_logits")
    raises_naming(lambda: token_divergence(s.long(), s.long()), "student_logits")
    raises_naming(lambda: token_divergence(s, s, "kl"), "kind")
    raises_naming(lambda: token_divergence(s, s, "jsd", beta=1.5), "beta")
    raises_naming(lambda: token_divergence(s, s, temperature=0.0), "temperature")


@needs_ext
def test_direct_op_errors():
    s = torch.randn(3, 5)
    raises_naming(lambda: torch.ops.posttrain.token_divergence(s, s[:2], "jsd", 0.5, 1.0), "teacher_logits")
    raises_naming(lambda: torch.ops.posttrain.token_divergence(s, s, "nope", 0.5, 1.0), "kind")
    raises_naming(lambda: torch.ops.posttrain.token_divergence(s, s, "jsd", 0.5, -1.0), "temperature")


_dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 4), v=st.integers(0, 30), v2=st.integers(0, 30), d1=_dtypes, d2=_dtypes,
       kind=st.sampled_from(KINDS), be=st.sampled_from(["torch", "ext"]))
def test_fuzz_inputs_never_crash(n, v, v2, d1, d2, kind, be):
    if be == "ext" and _backend.extension() is None:
        return
    s, t = torch.zeros(n, v).to(d1), torch.zeros(n, v2).to(d2)
    with _backend.force(be):
        try:
            out = token_divergence(s, t, kind)
        except (TypeError, ValueError, RuntimeError) as err:
            assert "student_logits" in str(err) or "teacher_logits" in str(err), str(err)
            return
    assert out.shape == (n,)


@needs_cuda
@needs_ext
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind):
    s, t = torch.randn(9, 769), torch.randn(9, 769)
    with _backend.force("ext"):
        torch.testing.assert_close(token_divergence(s.cuda(), t.cuda(), kind).cpu(), token_divergence(s, t, kind))
