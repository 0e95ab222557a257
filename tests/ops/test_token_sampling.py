import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from posttrain.ops import _backend, sample_k_tokens
from posttrain.ops.token_sampling import sample_k_tokens_reference
from tests.ops._util import OPCHECK_TESTS, raises_naming, strided
from tests.ops.conftest import needs_cuda, needs_ext


def test_hand_computed(backend):
    logits = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")], [5.0, 1.0, 2.0, 3.0]])
    u = torch.tensor([[0.0, 0.49, 0.5, 0.99], [0.1, 0.2, 0.3, 0.999]], dtype=torch.float64)
    s, slp, llp, lse = sample_k_tokens(logits, torch.tensor([2, -100]), 4, uniforms=u)
    assert s[0].tolist() == [0, 0, 2, 2]  # halves of the CDF, -inf tokens never drawn
    torch.testing.assert_close(llp, torch.tensor([torch.log(torch.tensor(0.5)).item(), 0.0]))
    s, *_ = sample_k_tokens(logits, None, 4, top_k=1, uniforms=u)
    assert s[1].tolist() == [0, 0, 0, 0]  # top-1 is greedy
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1))


def test_k_zero_and_one_hot(backend):
    one_hot = torch.full((3, 769), float("-inf"))
    one_hot[:, 700] = 0.0
    s, slp, _, _ = sample_k_tokens(one_hot, None, 5, uniforms=torch.rand(3, 5))
    assert (s == 700).all() and (slp == 0).all()
    s, slp, _, _ = sample_k_tokens(torch.randn(3, 9), None, 0)
    assert s.shape == (3, 0) and slp.shape == (3, 0)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("trunc", [(0, 1.0, 1.0), (7, 1.0, 0.8), (0, 0.9, 1.5), (20, 0.7, 1.0)])
def test_ext_matches_reference_exactly(dtype, trunc):
    top_k, top_p, temperature = trunc
    torch.manual_seed(3)
    logits = (2 * torch.randn(64, 769)).to(dtype)
    logits[0, 100:] = float("-inf")
    labels = torch.randint(0, 769, (64,))
    labels[5] = -100
    u = torch.rand(64, 8, dtype=torch.float64)
    out = []
    for b in ("torch", "ext"):
        with _backend.force(b):
            out.append(sample_k_tokens(logits, labels, 8, temperature, top_k, top_p, uniforms=u))
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(out[0][1:], out[1][1:]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _chi2_pvalue(samples, probs):
    counts = torch.bincount(samples.reshape(-1), minlength=probs.numel()).double()
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a zero-probability token was sampled"
    expected = probs[keep].double() / probs[keep].double().sum() * counts.sum()
    return stats.chisquare(counts[keep].numpy(), expected.numpy()).pvalue


@pytest.mark.parametrize("trunc", [(0, 1.0, 1.0), (10, 1.0, 1.3), (0, 0.8, 0.7)])
def test_chi_squared_distribution(backend, trunc):
    top_k, top_p, temperature = trunc
    g = torch.Generator().manual_seed(11)
    row = 1.5 * torch.randn(64, generator=g)
    logits = row.expand(2000, 64).contiguous()  # 2000 x 100 = 2e5 draws from one distribution
    s, *_ = sample_k_tokens(logits, None, 100, temperature, top_k, top_p, generator=g)
    xt = row / temperature
    keep = torch.ones(64, dtype=torch.bool)
    if top_k:
        keep &= xt >= xt.topk(top_k).values[-1]
    if top_p < 1:
        srt = xt[keep].sort(descending=True).values
        cum = torch.softmax(srt.double(), 0).cumsum(0)
        keep &= xt >= srt[int((cum < top_p).sum())]
    probs = torch.softmax(torch.where(keep, xt, float("-inf")), 0)
    assert _chi2_pvalue(s, probs) > 1e-4


def test_gradcheck_float64(backend):
    torch.manual_seed(4)
    x = torch.randn(5, 13, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 12, -100, 3, 7])
    u = torch.rand(5, 3, dtype=torch.float64)

    def f(t):
        _, slp, llp, lse = sample_k_tokens(t, labels, 3, temperature=1.4, top_k=6, uniforms=u)
        return slp, llp, lse

    assert torch.autograd.gradcheck(f, (x,))


def test_strided_and_bf16(backend):
    x = 2 * torch.randn(16, 769)
    u = torch.rand(16, 4, dtype=torch.float64)
    a = sample_k_tokens(strided(x), None, 4, uniforms=u)
    b = sample_k_tokens(x, None, 4, uniforms=u)
    assert torch.equal(a[0], b[0])
    labels = torch.randint(0, 769, (16,))
    ref = sample_k_tokens_reference(x, labels, u)[2]
    ours = sample_k_tokens(x.bfloat16(), labels, 4, uniforms=u)[2]
    own = torch.log_softmax(x.bfloat16(), -1).gather(-1, labels[:, None]).squeeze(-1)
    assert (ours - ref).abs().max() <= 2 * (own.float() - ref).abs().max() + 1e-6


@needs_ext
def test_opcheck():
    x = torch.randn(6, 769, requires_grad=True)
    labels = torch.tensor([0, 768, -100, 5, 6, 7])
    u = torch.rand(6, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.posttrain.sample_k_tokens.default, (x, labels, u, 1.2, 10, 0.9, -100),
                          test_utils=OPCHECK_TESTS)


@needs_ext
def test_torch_compile():
    x = torch.randn(8, 769, requires_grad=True)
    u = torch.rand(8, 4, dtype=torch.float64)
    f = torch.compile(lambda t: sample_k_tokens(t, None, 4, uniforms=u)[1].sum(), fullgraph=True,
                      backend="aot_eager")
    with _backend.force("ext"):
        (g,) = torch.autograd.grad(f(x), x)
    (r,) = torch.autograd.grad(sample_k_tokens_reference(x, torch.full((8,), -100), u)[1].sum(), x)
    torch.testing.assert_close(g, r)


def test_bad_arguments(backend):
    x = torch.randn(3, 5)
    raises_naming(lambda: sample_k_tokens(x, torch.tensor([0, 1, 5]), 2), "labels")
    raises_naming(lambda: sample_k_tokens(x, None, 2, uniforms=torch.rand(3, 3)), "uniforms")
    raises_naming(lambda: sample_k_tokens(x, None, 2, uniforms=torch.full((3, 2), 1.0)), "uniforms")
    raises_naming(lambda: sample_k_tokens(x, None, 2, top_p=0.0), "top_p")
    raises_naming(lambda: sample_k_tokens(x, None, 2, top_k=-1), "top_k")
    raises_naming(lambda: sample_k_tokens(x, None, 2, temperature=0), "temperature")
    raises_naming(lambda: sample_k_tokens(x.long(), None, 2), "logits")


@needs_ext
def test_direct_op_errors():
    x = torch.randn(3, 5)
    lab = torch.tensor([0, 1, 2])
    raises_naming(lambda: torch.ops.posttrain.sample_k_tokens(x, lab, torch.rand(2, 2), 1.0, 0, 1.0, -100), "uniforms")
    raises_naming(lambda: torch.ops.posttrain.sample_k_tokens(x, lab, torch.full((3, 2), 2.0), 1.0, 0, 1.0, -100),
                  "uniforms")
    raises_naming(lambda: torch.ops.posttrain.sample_k_tokens(x, lab + 5, torch.rand(3, 2), 1.0, 0, 1.0, -100),
                  "labels")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 4), v=st.integers(0, 30), k=st.integers(-1, 5), kk=st.integers(0, 5),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64, torch.int64]),
       udtype=st.sampled_from([torch.float32, torch.float64, torch.int64]), top_k=st.integers(-1, 40),
       top_p=st.sampled_from([0.0, 0.5, 1.0, 1.5]), be=st.sampled_from(["torch", "ext"]))
def test_fuzz_inputs_never_crash(n, v, k, kk, dtype, udtype, top_k, top_p, be):
    if be == "ext" and _backend.extension() is None:
        return
    logits = torch.randn(n, v).to(dtype)
    u = torch.rand(n, kk).to(udtype) if udtype != torch.int64 else torch.zeros(n, kk, dtype=torch.int64)
    with _backend.force(be):
        try:
            s = sample_k_tokens(logits, None, k, top_k=top_k, top_p=top_p, uniforms=u)[0]
        except (TypeError, ValueError, IndexError, RuntimeError) as err:
            assert any(w in str(err) for w in ("logits", "uniforms", "top_k", "top_p", "k must")), str(err)
            return
    assert s.shape == (n, k) and (s.numel() == 0 or (s.min() >= 0 and s.max() < v))


@needs_cuda
@needs_ext
def test_cuda_matches_cpu():
    x = torch.randn(17, 769)
    u = torch.rand(17, 4, dtype=torch.float64)
    with _backend.force("ext"):
        a = sample_k_tokens(x.cuda(), None, 4, 1.3, 20, 0.9, uniforms=u.cuda())
        b = sample_k_tokens(x, None, 4, 1.3, 20, 0.9, uniforms=u)
    assert torch.equal(a[0].cpu(), b[0])
