"""Diffusion losses against hand-computed values and the published formulas."""
import math

import pytest
import torch
from diffusers import DDPMScheduler

from posttrain.losses.diffusion import aaf_sign, denoising_error, denoising_loss, diffusion_dpo_loss, seppo_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_denoising_error_is_the_mean_squared_error_per_sample():
    predicted = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])  # (2, 1, 1, 2)
    noise = torch.tensor([[[[0.0, 0.0]]], [[[3.0, -1.0]]]])
    assert denoising_error(predicted, noise).tolist() == [2.5, 5.0]  # (1 + 4) / 2, (9 + 1) / 2
    loss, metrics = denoising_loss(predicted, noise, weights=torch.tensor([2.0, 0.5]))
    assert loss.item() == pytest.approx((2 * 2.5 + 0.5 * 5.0) / 2)
    assert metrics["mse"].item() == pytest.approx(3.75)


def test_diffusion_dpo_matches_the_published_formula_on_fixed_noise():
    """Wallace et al. Eq. 14 on two pairs: x_t from DDPMScheduler.add_noise with fixed ε and t shared by each pair;
    the policy's and reference's predictions fixed tensors; the loss written out element by element."""
    torch.manual_seed(0)
    scheduler = DDPMScheduler(num_train_timesteps=10)
    x_w, x_l = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    eps_w, eps_l = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    t = torch.tensor([3, 7])
    xt_w, xt_l = scheduler.add_noise(x_w, eps_w, t), scheduler.add_noise(x_l, eps_l, t)
    # stand-ins for ε_θ and ε_ref: fixed functions of x_t
    theta_w, theta_l, ref_w, ref_l = 0.9 * xt_w, 0.8 * xt_l, 0.5 * xt_w, 0.5 * xt_l
    beta, T = 0.3, 10
    expected = 0.0
    for i in range(2):
        def sq(a, b):
            return ((a[i] - b[i]) ** 2).mean().item()
        bracket = (sq(eps_w, theta_w) - sq(eps_w, ref_w)) - (sq(eps_l, theta_l) - sq(eps_l, ref_l))
        expected += -log_sigmoid(-beta * T * bracket) / 2
    loss, metrics = diffusion_dpo_loss(denoising_error(theta_w, eps_w), denoising_error(ref_w, eps_w),
                                       denoising_error(theta_l, eps_l), denoising_error(ref_l, eps_l),
                                       beta=beta, num_timesteps=T)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["scale"].item() == pytest.approx(3.0)


def test_diffusion_dpo_hand_values_and_weighting():
    # Δ_w = 0.1 - 0.3 = -0.2, Δ_l = 0.5 - 0.4 = 0.1: bracket -0.3; β T ω = 2 * 5 * 0.5 = 5: -log σ(1.5)
    one = torch.tensor
    loss, metrics = diffusion_dpo_loss(one([0.1]), one([0.3]), one([0.5]), one([0.4]), beta=2.0, num_timesteps=5,
                                       weights=one([0.5]))
    assert loss.item() == pytest.approx(-log_sigmoid(1.5), rel=1e-6)
    assert metrics["accuracy"].item() == 1.0 and metrics["margin"].item() == pytest.approx(0.3)


def test_aaf_sign_and_its_variants():
    err, err_ref = torch.tensor([0.1, 0.5, 0.3]), torch.tensor([0.2, 0.4, 0.3])
    # row 0: the current model fits the anchor better -> +1; row 1: the reference better -> -1; a tie -> -1
    assert aaf_sign(err, err_ref, "sign").tolist() == [1.0, -1.0, -1.0]
    assert aaf_sign(err, err_ref, "indicator").tolist() == [1.0, 0.0, 0.0]
    assert aaf_sign(err, err_ref, "none").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="flip"):
        aaf_sign(err, err_ref, "flip")


def test_seppo_loss_hand_values_for_each_sign():
    one = torch.tensor
    err_w, err_w_ref, err_r, err_r_ref = one([0.2, 0.2, 0.2]), one([0.3, 0.3, 0.3]), one([0.6] * 3), one([0.4] * 3)
    # Δ_w = -0.1, Δ_r = 0.2; β T = 1 * 10
    loss, metrics = seppo_loss(err_w, err_w_ref, err_r, err_r_ref, one([1.0, -1.0, 0.0]), beta=1.0,
                               num_timesteps=10)
    plus = -log_sigmoid(-10 * (-0.1 - 0.2))  # Diffusion-DPO with x^r the loser
    minus = -log_sigmoid(-10 * (-0.1 + 0.2))  # both pushed below the reference
    dropped = -log_sigmoid(-10 * -0.1)  # the anchor term alone
    assert loss.item() == pytest.approx((plus + minus + dropped) / 3, rel=1e-6)
    assert metrics["flip_fraction"].item() == pytest.approx(1 / 3)
    assert metrics["dropped_fraction"].item() == pytest.approx(1 / 3)


def test_seppo_with_sign_plus_one_is_diffusion_dpo_and_the_sign_carries_no_gradient():
    torch.manual_seed(1)
    err_w, err_r = torch.rand(4, requires_grad=True), torch.rand(4, requires_grad=True)
    err_w_ref, err_r_ref = torch.rand(4), torch.rand(4)
    seppo, _ = seppo_loss(err_w, err_w_ref, err_r, err_r_ref, torch.ones(4), beta=0.7, num_timesteps=20)
    dpo, _ = diffusion_dpo_loss(err_w, err_w_ref, err_r, err_r_ref, beta=0.7, num_timesteps=20)
    torch.testing.assert_close(seppo, dpo)
    sign = aaf_sign(err_w, err_w_ref, "sign")
    assert not sign.requires_grad
    loss, _ = seppo_loss(err_w, err_w_ref, err_r, err_r_ref, sign, beta=0.7, num_timesteps=20)
    loss.backward()
    # rows flipped to -1 push the reference sample's error down: its gradient has the anchor's sign
    flipped = sign < 0
    assert torch.all((err_r.grad[flipped] > 0) == (err_w.grad[flipped] > 0))
    assert torch.all((err_r.grad[~flipped] < 0) == (err_w.grad[~flipped] > 0))
