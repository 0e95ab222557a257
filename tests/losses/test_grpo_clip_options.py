"""grpo_loss's asymmetric clip, dual clip and KL clamp (the settings of the LLaVA-Critic-R1 runs), by hand."""
import math

import pytest
import torch

from posttrain.losses.grpo import grpo_loss

DOUBLE = torch.float64


def one_token(log_ratio: float, advantage: float, **options):
    logp = torch.tensor([[log_ratio]], dtype=DOUBLE, requires_grad=True)
    loss, metrics = grpo_loss(logp, torch.zeros(1, 1, dtype=DOUBLE), torch.tensor([advantage], dtype=DOUBLE),
                              torch.ones(1, 1), normalizer=1.0, **options)
    loss.backward()
    return loss.item(), logp.grad.item(), metrics


def test_defaults_are_the_symmetric_clip():
    # R = e^0.25 = 1.284 > 1.2: clipped at 1.2 for A = 1, with or without the options' defaults
    assert one_token(0.25, 1.0)[0] == pytest.approx(-1.2)
    assert one_token(0.25, 1.0, clip_eps_high=None, dual_clip=None, kl_clamp=None)[0] == pytest.approx(-1.2)


def test_clip_higher_lets_a_positive_advantage_ratio_grow_to_one_plus_eps_high():
    ratio = math.exp(0.25)  # 1.284: inside [0.8, 1.3], so unclipped: loss −R·A, gradient −R·A
    loss, grad, metrics = one_token(0.25, 1.0, clip_eps=0.2, clip_eps_high=0.3)
    assert loss == pytest.approx(-ratio) and grad == pytest.approx(-ratio) and metrics["clip_fraction"] == 0
    loss, grad, _ = one_token(0.4, 1.0, clip_eps=0.2, clip_eps_high=0.3)  # R = 1.49 > 1.3: clipped, no gradient
    assert loss == pytest.approx(-1.3) and grad == 0
    # the lower bound stays 1 − ε: R = e^-0.3 = 0.741 < 0.8 with A = −1 is clipped at 0.8
    loss, grad, _ = one_token(-0.3, -1.0, clip_eps=0.2, clip_eps_high=0.3)
    assert loss == pytest.approx(0.8) and grad == 0


def test_dual_clip_bounds_negative_advantage_terms_at_c_times_a():
    # A = −2, R = e^1.5 = 4.48: min(R·A, clip(R)·A) = −8.96; the dual bound c·A = −6 is larger, so loss = 6
    loss, grad, metrics = one_token(1.5, -2.0, dual_clip=3.0)
    assert loss == pytest.approx(6.0) and grad == 0 and metrics["dual_clip_fraction"] == 1
    without = one_token(1.5, -2.0)
    assert without[0] == pytest.approx(2.0 * math.exp(1.5)) and without[1] == pytest.approx(2.0 * math.exp(1.5))
    # below the bound (R = 2 < 3) nothing changes; a positive advantage is never dual-clipped
    assert one_token(math.log(2.0), -1.0, dual_clip=3.0)[0] == pytest.approx(2.0)
    assert one_token(1.5, 1.0, dual_clip=3.0)[0] == pytest.approx(-1.2)
    with pytest.raises(ValueError, match="dual_clip"):
        one_token(0.0, 1.0, dual_clip=1.0)


def test_kl_clamp_caps_the_k3_estimate():
    logp = torch.tensor([[0.0, 0.0]], dtype=DOUBLE, requires_grad=True)
    ref = torch.tensor([[3.0, -1.0]], dtype=DOUBLE)  # k3: e^3 − 3 − 1 = 16.09 (capped at 10), e^-1 + 1 − 1 = 0.368
    loss, metrics = grpo_loss(logp, logp.detach(), torch.zeros(1, dtype=DOUBLE), torch.ones(1, 2), ref_logp=ref,
                              kl_coef=0.01, aggregation="seq-mean", kl_clamp=10.0)
    expected = (10.0 + math.exp(-1.0)) / 2
    assert metrics["kl"].item() == pytest.approx(expected)
    assert loss.item() == pytest.approx(0.01 * expected)
    loss.backward()  # the capped token gives no gradient; the other d/dlogp [e^(r−l) − (r−l) − 1] = 1 − e^(r−l)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.01 * (1 - math.exp(-1.0)) / 2]], dtype=DOUBLE))
