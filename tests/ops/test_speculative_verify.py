import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from posttrain.ops import _backend, speculative_verify
from posttrain.ops.speculative_verify import speculative_verify_reference
from tests.ops._util import raises_naming
from tests.ops.conftest import needs_cuda, needs_ext

NEG = float("-inf")


def _draft(q, g=None):
    """Draft tokens (B, γ) drawn from q (B, γ, V) by inverse CDF."""
    cdf = q.double().cumsum(-1)
    u = torch.rand(q.shape[:2], generator=g, dtype=torch.float64)
    return torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1)).squeeze(-1).clamp(max=q.shape[-1] - 1)


def test_hand_computed(backend):
    # position 0: p = (.5, .25, .25), q = (.25, .5, .25), draft 1: accept iff u * .5 < .25
    p0 = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    target = torch.stack([p0, p0, p0])[None]  # (1, 3, 3)
    q = torch.tensor([[[0.25, 0.5, 0.25], [0.25, 0.5, 0.25]]])
    tok = torch.tensor([[1, 1]])
    # u0 = .4 accepts, u1 = .6 rejects; residual max(0, p - q) = (.25, 0, 0) -> token 0
    tokens, n, expected = speculative_verify(tok, q, target, torch.tensor([[0.4, 0.6, 0.9]], dtype=torch.float64))
    assert tokens.tolist() == [[1, 0, -1]] and n.tolist() == [1]
    torch.testing.assert_close(expected, torch.tensor([[0.75, 0.75]]))
    # both accepted: the bonus token from p_2 with u = .9 -> cdf (.5, .75, 1.) -> token 2
    tokens, n, _ = speculative_verify(tok, q, target, torch.tensor([[0.1, 0.2, 0.9]], dtype=torch.float64))
    assert tokens.tolist() == [[1, 1, 2]] and n.tolist() == [2]
    # lenient with ε = .5 accepts u1 = .6 as well: .6 * .5 < .25 / .5
    tokens, n, expected = speculative_verify(tok, q, target, torch.tensor([[0.4, 0.6, 0.9]], dtype=torch.float64),
                                             mode="lenient", lenience=0.5)
    assert n.tolist() == [2]
    torch.testing.assert_close(expected, torch.tensor([[1.0, 1.0]]))


def test_greedy_exact_with_ties(backend):
    target = torch.tensor([[[1.0, 3.0, 3.0, 0.0], [5.0, 0.0, 5.0, 1.0], [0.0, 0.0, 0.0, 9.0]]])  # (1, 3, 4)
    q = torch.full((1, 2, 4), 0.25)
    u = torch.zeros(1, 3)
    tokens, n, expected = speculative_verify(torch.tensor([[1, 0]]), q, target, u, mode="greedy")
    assert tokens.tolist() == [[1, 0, 3]] and n.tolist() == [2] and expected.tolist() == [[1.0, 1.0]]
    tokens, n, expected = speculative_verify(torch.tensor([[2, 0]]), q, target, u, mode="greedy")
    assert tokens.tolist() == [[1, -1, -1]] and n.tolist() == [0] and expected.tolist() == [[0.0, 1.0]]


def test_p_equals_q_accepts_everything(backend):
    torch.manual_seed(0)
    logits = torch.randn(16, 4, 769)
    q = torch.softmax(logits[:, :3], -1)
    tokens, n, expected = speculative_verify(_draft(q), q, logits)
    assert (n == 3).all() and (tokens >= 0).all()
    torch.testing.assert_close(expected, torch.ones(16, 3))


def test_empty_residual_falls_back_to_p(backend):
    # draft probs used as given: q = 2p rejects when u >= .5 and leaves max(0, p - q) empty -> draw from p
    target = torch.full((1, 2, 5), NEG)
    target[0, :, 3] = 0.0
    target[0, 0, 1] = 0.0  # p_0 = (0, .5, 0, .5, 0)
    q = 2 * torch.softmax(target[:, :1], -1)
    tokens, n, _ = speculative_verify(torch.tensor([[1]]), q, target, torch.tensor([[0.7, 0.8]], dtype=torch.float64))
    assert n.tolist() == [0] and tokens.tolist() == [[3, -1]]


def test_disjoint_support_and_one_hot(backend):
    target = torch.full((2, 3, 6), NEG)
    target[:, :, :3] = 0.0  # p uniform on {0, 1, 2}
    q = torch.zeros(2, 2, 6)
    q[:, :, 3:] = 1 / 3  # q on {3, 4, 5}: always rejected, residual is p
    u = torch.tensor([[0.0, 0.0, 0.5], [0.3, 0.3, 0.99]], dtype=torch.float64)
    tokens, n, expected = speculative_verify(torch.tensor([[3, 4], [5, 5]]), q, target, u)
    assert n.tolist() == [0, 0] and tokens.tolist() == [[1, -1, -1], [2, -1, -1]]
    torch.testing.assert_close(expected, torch.zeros(2, 2))
    one_hot = torch.full((1, 3, 6), NEG)
    one_hot[0, :, 4] = 0.0
    qh = torch.zeros(1, 2, 6)
    qh[0, :, 4] = 1.0
    tokens, n, _ = speculative_verify(torch.tensor([[4, 4]]), qh, one_hot, torch.rand(1, 3).clamp(max=0.99))
    assert tokens.tolist() == [[4, 4, 4]] and n.tolist() == [2]


@needs_ext
@pytest.mark.parametrize("mode", ["sample", "lenient", "greedy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("V", [7, 769])
def test_ext_matches_reference_exactly(mode, dtype, V):
    torch.manual_seed(V)
    B, G = 48, 4
    dl = torch.randn(B, G, V)
    q = torch.softmax(dl, -1)
    target = torch.cat([dl + 0.7 * torch.randn(B, G, V), torch.randn(B, 1, V)], 1).to(dtype)
    target[0, :, : V // 2] = NEG
    u = torch.rand(B, G + 1, dtype=torch.float64)
    outs = []
    for b in ("torch", "ext"):
        with _backend.force(b):
            outs.append(speculative_verify(_draft(q, torch.Generator().manual_seed(1)), q.to(dtype), target, u,
                                           temperature=1.3, mode=mode, lenience=0.4))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][2], outs[1][2], atol=1e-5, rtol=1e-5)


def test_chi_squared_reproduces_target(backend):
    """γ = 3, V = 64, 2·10^5 trials: every emitted token follows the target's distribution at its position."""
    g = torch.Generator().manual_seed(5)
    V, G, trials, chunk = 64, 3, 200_000, 50_000
    tl = 1.5 * torch.randn(G + 1, V, generator=g)  # (γ+1, V) target logits, context-free
    ql = tl[:G] + torch.randn(G, V, generator=g)  # a mismatched draft
    p, q = torch.softmax(tl, -1), torch.softmax(ql, -1)
    emitted = [[] for _ in range(G + 1)]
    accepted0 = []
    for _ in range(trials // chunk):
        qb = q.expand(chunk, G, V).contiguous()
        tok, n, expected = speculative_verify(_draft(qb, g), qb, tl.expand(chunk, G + 1, V).contiguous(), generator=g)
        accepted0.append((n > 0).double())
        for j in range(G + 1):
            emitted[j].append(tok[:, j][tok[:, j] >= 0])
    for j in range(G + 1):
        s = torch.cat(emitted[j])
        counts = torch.bincount(s, minlength=V).double()
        assert stats.chisquare(counts.numpy(),
                               (p[j].double() / p[j].double().sum() * counts.sum()).numpy()).pvalue > 1e-4
    rate = torch.cat(accepted0).mean()
    want = torch.minimum(p[0], q[0]).sum().double()
    assert abs(rate - want) < 4 * (want * (1 - want) / trials) ** 0.5
    torch.testing.assert_close(expected[0, 0].double(), want, atol=1e-5, rtol=0)


@needs_ext
def test_opcheck_and_compile():
    torch.manual_seed(2)
    q = torch.softmax(torch.randn(4, 3, 769), -1)
    target = torch.randn(4, 4, 769)
    u = torch.rand(4, 4, dtype=torch.float64)
    args = (_draft(q), q, target, u, 1.0, "sample", 1.0)
    torch.library.opcheck(torch.ops.posttrain.speculative_verify.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    f = torch.compile(lambda *a: speculative_verify(*a[:4]), fullgraph=True, backend="aot_eager")
    with _backend.force("ext"):
        got = f(*args[:4])
    want = speculative_verify_reference(*args)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_bad_arguments(backend):
    q = torch.full((2, 3, 5), 0.2)
    t = torch.zeros(2, 4, 5)
    tok = torch.zeros(2, 3, dtype=torch.long)
    raises_naming(lambda: speculative_verify(tok + 5, q, t), "draft_tokens")
    raises_naming(lambda: speculative_verify(tok, q[:, :2], t), "draft_probs")
    raises_naming(lambda: speculative_verify(tok, q, t[:, :3]), "target_logits")
    raises_naming(lambda: speculative_verify(tok, q, t, torch.rand(2, 3)), "uniforms")
    raises_naming(lambda: speculative_verify(tok, q, t, mode="fast"), "mode")
    raises_naming(lambda: speculative_verify(tok, q, t, mode="lenient", lenience=0.0), "lenience")
    raises_naming(lambda: speculative_verify(tok.float(), q, t), "draft_tokens")


@needs_ext
def test_direct_op_errors():
    q = torch.full((2, 3, 5), 0.2)
    t = torch.zeros(2, 4, 5)
    tok = torch.zeros(2, 3, dtype=torch.long)
    u = torch.rand(2, 4)
    op = torch.ops.posttrain.speculative_verify
    raises_naming(lambda: op(tok + 5, q, t, u, 1.0, "sample", 1.0), "draft_tokens")
    raises_naming(lambda: op(tok, q, t[:, :3], u, 1.0, "sample", 1.0), "target_logits")
    raises_naming(lambda: op(tok, q, t, u + 1, 1.0, "sample", 1.0), "uniforms")
    raises_naming(lambda: op(tok, q, t, u, 0.0, "sample", 1.0), "temperature")


@settings(max_examples=40, deadline=None)
@given(b=st.integers(0, 3), g=st.integers(0, 3), v=st.integers(0, 9), db=st.integers(-1, 1), dg=st.integers(-1, 1),
       dv=st.integers(-1, 1), tdtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int64]),
       kdtype=st.sampled_from([torch.int64, torch.int32, torch.float32]), shift=st.integers(0, 12),
       mode=st.sampled_from(["sample", "greedy", "lenient", "x"]), be=st.sampled_from(["torch", "ext"]))
def test_fuzz_inputs_never_crash(b, g, v, db, dg, dv, tdtype, kdtype, shift, mode, be):
    if be == "ext" and _backend.extension() is None:
        return
    tok = (torch.arange(b * g).reshape(b, g) + shift).to(kdtype)
    q = torch.full((max(b + db, 0), g, max(v + dv, 0)), 0.1)
    t = torch.zeros(b, max(g + dg + 1, 0), v).to(tdtype)
    with _backend.force(be):
        try:
            tokens, n, _ = speculative_verify(tok, q, t, mode=mode, lenience=0.5)
        except (TypeError, ValueError, IndexError, RuntimeError) as err:
            assert any(w in str(err) for w in ("draft_tokens", "draft_probs", "target_logits", "mode")), str(err)
            return
    assert tokens.shape == (b, g + 1) and ((n >= 0) & (n <= g)).all()


@needs_cuda
@needs_ext
@pytest.mark.parametrize("mode", ["sample", "greedy", "lenient"])
def test_cuda_matches_cpu(mode):
    q = torch.softmax(torch.randn(8, 3, 769), -1)
    t = torch.randn(8, 4, 769)
    tok = _draft(q)
    u = torch.rand(8, 4, dtype=torch.float64)
    with _backend.force("ext"):
        a = speculative_verify(tok.cuda(), q.cuda(), t.cuda(), u.cuda(), 1.0, mode, 0.5)
        b = speculative_verify(tok, q, t, u, 1.0, mode, 0.5)
    assert torch.equal(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1])


@pytest.mark.parametrize("b, g", [(3, 0), (0, 2), (0, 0)])
def test_empty_draft_or_batch_gives_the_documented_shapes(b, g):
    """γ = 0 verifies nothing and draws the extra token from p_0 (greedy: its argmax); B = 0 returns no rows."""
    logits = torch.randn(b, g + 1, 7, generator=torch.Generator().manual_seed(0))
    draft, probs = torch.zeros(b, g, dtype=torch.long), torch.full((b, g, 7), 1 / 7)
    uniforms = torch.full((b, g + 1), 0.5, dtype=torch.float64)
    tokens, n, expected = speculative_verify_reference(draft, probs, logits, uniforms, mode="greedy")
    assert tokens.shape == (b, g + 1) and n.shape == (b,) and expected.shape == (b, g)
    if g == 0:
        assert torch.equal(tokens[:, 0], logits[:, 0].argmax(-1)) and not n.any()
