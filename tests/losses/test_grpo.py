import pytest
import torch

from posttrain.losses.grpo import grpo_loss

DOUBLE = torch.float64


def test_on_policy_gradient_is_minus_advantage():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], dtype=DOUBLE, requires_grad=True)
    adv = torch.tensor([0.5, -0.5], dtype=DOUBLE)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = grpo_loss(logp, logp.detach(), adv, mask, normalizer=2.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.0]], dtype=DOUBLE))
    assert loss.item() == pytest.approx((-0.5 * 2 + 0.5) / 2.0)
    assert metrics["clip_fraction"] == 0


def test_clipping_zeroes_the_gradient_outside_the_trust_region():
    old = torch.zeros(2, 1, dtype=DOUBLE)
    logp = torch.tensor([[0.5], [-0.5]], dtype=DOUBLE, requires_grad=True)  # R = 1.65 (A > 0), 0.61 (A < 0)
    loss, metrics = grpo_loss(logp, old, torch.tensor([1.0, -1.0], dtype=DOUBLE), torch.ones(2, 1), normalizer=1.0)
    loss.backward()
    assert logp.grad.abs().max() == 0 and metrics["clip_fraction"] == 1
    assert loss.item() == pytest.approx(-1.2 + 0.8)


def test_seq_mean_aggregation_and_kl():
    logp = torch.tensor([[-1.0, -1.0, 0.0]], dtype=DOUBLE, requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    ref = torch.tensor([[-1.0, -2.0, 0.0]], dtype=DOUBLE)
    loss, metrics = grpo_loss(logp, logp.detach(), torch.tensor([1.0], dtype=DOUBLE), mask, ref_logp=ref,
                              kl_coef=0.1, aggregation="seq-mean")
    kl = torch.exp(torch.tensor(-1.0)) + 1 - 1  # second token: e^{-1} − (−1) − 1
    assert metrics["kl"].item() == pytest.approx(kl.item() / 2)
    assert loss.item() == pytest.approx(-1.0 + 0.1 * kl.item() / 2)


def test_kl_needs_reference_and_aggregation_is_checked():
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(x, x, torch.ones(1), x, kl_coef=0.1)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(x, x, torch.ones(1), x, aggregation="mean")
