"""Row-blocked lm-head functions equal the same functions of the materialised logits: values and gradients."""
import pytest
import torch

from posttrain.ops import sample_k_tokens, token_divergence
from posttrain.ops.lm_head_rows import lm_head_divergence, lm_head_entropy, lm_head_rows, lm_head_sample_k


def inputs(n=13, h=8, h_t=6, v=40, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    teacher_hidden = torch.randn(n, h_t, generator=g, dtype=dtype)
    teacher_weight = torch.randn(v, h_t, generator=g, dtype=dtype)
    return hidden, weight, teacher_hidden, teacher_weight


def grads(out, hidden, weight, seed=1):
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * cotangent).sum(), (hidden, weight))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("rows", [0, 1, 4])
def test_divergence_matches_the_materialised_logits(kind, rows):
    hidden, weight, th, tw = inputs()
    expected = token_divergence(hidden @ weight.t(), th @ tw.t(), kind, beta=0.3, temperature=1.7)  # (N,)
    got = lm_head_divergence(hidden, weight, th, tw, kind, beta=0.3, temperature=1.7, rows=rows)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads(got, hidden, weight), grads(expected, hidden, weight)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_divergence_in_float32():
    hidden, weight, th, tw = (t.float().detach().requires_grad_(t.requires_grad) for t in inputs())
    expected = token_divergence(hidden @ weight.t(), th @ tw.t(), "jsd")
    got = lm_head_divergence(hidden, weight, th, tw, "jsd", rows=5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads(got, hidden, weight), grads(expected, hidden, weight)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rows", [0, 3])
def test_sampling_draws_the_same_candidates_with_the_same_gradients(rows):
    hidden, weight, _, _ = inputs()
    labels = torch.randint(0, 40, (13,), generator=torch.Generator().manual_seed(2))
    labels[:2] = -100
    uniforms = torch.rand(13, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    samples, sample_logps, label_logps, _ = sample_k_tokens(hidden @ weight.t(), labels, 5, 1.5, uniforms=uniforms)
    got = lm_head_sample_k(hidden, weight, labels, uniforms, 1.5, rows=rows)
    assert torch.equal(got[0], samples)
    torch.testing.assert_close(got[1], sample_logps, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[2], label_logps, rtol=1e-10, atol=1e-12)
    loss = lambda s, y: s.sum() * 0.3 - (y * torch.arange(13.0, dtype=y.dtype)).sum()  # noqa: E731
    expected = torch.autograd.grad(loss(sample_logps, label_logps), (hidden, weight))
    for a, b in zip(torch.autograd.grad(loss(got[1], got[2]), (hidden, weight)), expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_entropy_matches_the_categorical_entropy():
    hidden, weight, _, _ = inputs()
    expected = torch.distributions.Categorical(logits=(hidden @ weight.t()) / 2.0).entropy()  # (N,)
    got = lm_head_entropy(hidden, weight, temperature=2.0, rows=4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)


def test_only_one_block_of_logits_exists_at_a_time():
    """The function sees blocks of at most `rows` rows, in the forward and in the backward's recomputation."""
    hidden, weight, _, _ = inputs(n=10)
    seen = []

    def logsumexp(h, w):
        seen.append(h.shape[0])
        return (torch.logsumexp(h @ w.t(), -1),)

    out = lm_head_rows(logsumexp, hidden, weight, rows=4)[0]
    out.sum().backward()
    assert seen == [4, 4, 2, 4, 4, 2]
    torch.testing.assert_close(out, torch.logsumexp(hidden @ weight.t(), -1))


def test_frozen_weight_and_constant_row_arguments():
    hidden, weight, _, _ = inputs()
    weight = weight.detach()
    scale = torch.rand(13, dtype=torch.float64)
    out = lm_head_rows(lambda h, w, s: ((h @ w.t()).logsumexp(-1) * s,), hidden, weight, scale, rows=3)[0]
    (grad,) = torch.autograd.grad(out.sum(), hidden)
    (expected,) = torch.autograd.grad(((hidden @ weight.t()).logsumexp(-1) * scale).sum(), hidden)
    torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match=r"row_args\[0\] must not require grad"):
        lm_head_rows(lambda h, w, s: (h.sum(-1),), hidden, weight, scale.requires_grad_())
    with pytest.raises(ValueError, match=r"row_args\[0\] must have 13 rows"):
        lm_head_rows(lambda h, w, s: (h.sum(-1),), hidden, weight, torch.zeros(3))
