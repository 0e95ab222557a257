import math

import pytest
import torch

from posttrain.losses.otr import otr_expected_loss, otr_loss, otr_rewards, rollout_entropy
from posttrain.losses.sft import sft_loss
from posttrain.ops.token_sampling import sample_k_tokens_reference


def sampled(logits, labels, mask, k, beta, temperature, generator, normalization="sequence"):
    """The full sampled path (reference op) from logits (B, T, V), as OTRModule runs it."""
    b, t, v = logits.shape
    uniforms = torch.rand((b * t, k), generator=generator, dtype=torch.float64)
    samples, slp, _, _ = sample_k_tokens_reference(logits.reshape(b * t, v), labels.reshape(-1), uniforms,
                                                   temperature=temperature)
    return otr_loss(slp.view(b, t, k), samples.view(b, t, k), labels, mask, beta, normalization)


def test_hand_computed_value_and_terms():
    # one sequence, two response positions and a prompt position, K = 2
    logps = torch.tensor([[[-0.5, -2.0], [-1.0, -1.0], [-9.0, -9.0]]])
    samples = torch.tensor([[[3, 1], [2, 2], [0, 0]]])
    labels = torch.tensor([[3, 4, 0]])
    mask = torch.tensor([[1, 1, 0]])
    beta = -0.2
    loss, m = otr_loss(logps, samples, labels, mask, beta=beta)
    # position 0: -(1·-0.5 + β·-2.0)/2 ; position 1: -(β·-1 + β·-1)/2 ; mean over T = 2
    hit = -(1 * -0.5) / 2 / 2
    miss = (-(beta * -2.0) / 2 - (beta * -1.0 * 2) / 2) / 2
    assert m["loss/hit"].item() == pytest.approx(hit)
    assert m["loss/miss"].item() == pytest.approx(miss)
    assert loss.item() == pytest.approx(hit + miss)
    assert m["hit_rate"].item() == pytest.approx(1 / 4)
    assert m["reward"].item() == pytest.approx((1 + 3 * beta) / 4)


def test_rewards():
    r = otr_rewards(torch.tensor([[1, 2, 1]]), torch.tensor([1]), beta=-0.5)
    assert r.tolist() == [[1.0, -0.5, 1.0]]


def test_sequence_vs_token_normalization():
    logps = torch.tensor([[[-1.0]], [[-2.0]]]).expand(2, 3, 1).contiguous()  # rows of -1 and -2
    samples = torch.zeros(2, 3, 1, dtype=torch.long)
    labels = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    seq, _ = otr_loss(logps, samples, labels, mask, normalization="sequence")
    tok, _ = otr_loss(logps, samples, labels, mask, normalization="token")
    assert seq.item() == pytest.approx((1.0 + 2.0) / 2)  # each sequence's mean, then the batch mean
    assert tok.item() == pytest.approx((1.0 + 3 * 2.0) / 4)


def test_forced_hits_with_beta_zero_is_sft():
    torch.manual_seed(0)
    logps = torch.randn(3, 5).clamp(max=-0.01)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    labels = torch.randint(0, 7, (3, 5))
    samples = labels[..., None].expand(3, 5, 4)  # every candidate is the label
    loss, _ = otr_loss(logps[..., None].expand(3, 5, 4), samples, labels, mask, beta=0.0, normalization="token")
    assert loss.item() == pytest.approx(sft_loss(logps, mask)[0].item())
    seq, _ = otr_loss(logps[..., None].expand(3, 5, 4), samples, labels, mask, beta=0.0)
    per_seq = -(logps * mask).sum(-1) / mask.sum(-1)
    assert seq.item() == pytest.approx(per_seq.mean().item())


def test_gradcheck_float64_through_sampling():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 6, (2, 3), generator=g)
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    uniforms = torch.rand((6, 5), generator=g, dtype=torch.float64)

    def fn(z):
        samples, slp, _, _ = sample_k_tokens_reference(z.reshape(6, 6), labels.reshape(-1), uniforms, 1.5)
        return otr_loss(slp.view(2, 3, 5), samples.view(2, 3, 5), labels, mask, beta=-0.3)[0]

    assert torch.autograd.gradcheck(fn, (logits,))  # the candidates stay fixed under the tiny perturbations
    # the expectation form is checked against its closed-form gradient below: π' is a stop-gradient, so finite
    # differences (which move π' too) are not its gradient


def test_expectation_gradient_closed_form():
    # ∂L/∂z_t = (1/T)((Σ_v w_v) π_θ − w), w_y = π'(y), w_v = β π'(v)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 4, 9, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 9, (1, 4), generator=g)
    mask = torch.ones(1, 4)
    beta, tau = -0.2, 2.0
    otr_expected_loss(logits, labels, mask, beta, tau)[0].backward()
    z = logits.detach()
    rollout = torch.softmax(z / tau, -1)
    onehot = torch.nn.functional.one_hot(labels, 9).double()
    w = rollout * onehot + beta * rollout * (1 - onehot)
    expected = (w.sum(-1, keepdim=True) * torch.softmax(z, -1) - w) / 4
    torch.testing.assert_close(logits.grad, expected)


def test_tau_one_expectation_is_scaled_dft():
    # at τ = 1 the β term only rescales the gradient by (1 − β) relative to DFT (π(y)·∇log π(y))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 7, (2, 3), generator=g)
    mask = torch.ones(2, 3)
    otr_expected_loss(logits, labels, mask, beta=-0.5, temperature=1.0)[0].backward()
    dft = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(dft, -1).gather(-1, labels[..., None])[..., 0]
    (-(logp.exp().detach() * logp).mean(-1).mean()).backward()
    torch.testing.assert_close(logits.grad, 1.5 * dft.grad)


def test_sampled_gradient_converges_to_expectation():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, generator=g) * 1.5
    labels = torch.randint(0, 5, (2, 3), generator=g)
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    beta, tau = -0.3, 1.5
    z = logits.clone().requires_grad_(True)
    otr_expected_loss(z, labels, mask, beta, tau)[0].backward()
    exact = z.grad.clone()

    errors = {}
    for k in (16, 4096):
        z = logits.clone().requires_grad_(True)
        sampled(z, labels, mask, k, beta, tau, torch.Generator().manual_seed(5))[0].backward()
        errors[k] = (z.grad - exact).abs().max().item()
    assert errors[4096] < 0.01
    assert errors[4096] < errors[16] / 4  # Monte-Carlo error shrinks like 1/sqrt(K)

    # the loss values agree too, and prompt positions receive no gradient
    z = logits.clone().requires_grad_(True)
    loss, metrics = sampled(z, labels, mask, 4096, beta, tau, torch.Generator().manual_seed(6))
    loss.backward()
    exp_loss, exp_metrics = otr_expected_loss(logits, labels, mask, beta, tau)
    assert loss.item() == pytest.approx(exp_loss.item(), abs=0.01)
    assert metrics["hit_rate"].item() == pytest.approx(exp_metrics["hit_rate"].item(), abs=0.01)
    assert torch.all(z.grad[1, 0] == 0)


def test_rollout_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]])
    assert rollout_entropy(logits, torch.tensor([1, 0]), 1.0).item() == pytest.approx(math.log(4))
