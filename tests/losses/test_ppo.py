import pytest
import torch

from posttrain.losses.ppo import gae, kl_penalized_rewards, normalize_scores, pairwise_score, ppo_loss, whiten

DOUBLE = torch.float64


def test_kl_penalty_on_every_response_token_and_score_on_the_last():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    old = torch.tensor([[9.0, -1.0, -2.0, 9.0], [9.0, 9.0, -0.5, -1.0]], dtype=DOUBLE)
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, 0.0, -1.5, -1.0]], dtype=DOUBLE)
    rewards = kl_penalized_rewards(old, ref, torch.tensor([2.0, -1.0], dtype=DOUBLE), mask, kl_coef=0.1)
    expected = torch.tensor([[0.0, -0.05, 0.1 + 2.0, 0.0], [0.0, 0.0, -0.1, 0.0 - 1.0]], dtype=DOUBLE)
    torch.testing.assert_close(rewards, expected)


def test_row_without_response_gets_no_score():
    rewards = kl_penalized_rewards(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([5.0]), torch.zeros(1, 3), 0.1)
    assert rewards.abs().sum() == 0


def test_gae_by_hand_with_lambda_below_one_and_masked_positions():
    # one prompt position, three response tokens, one padding position; off-mask values and rewards are garbage
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    values = torch.tensor([[9.0, 1.0, 2.0, 3.0, 9.0]], dtype=DOUBLE)
    rewards = torch.tensor([[5.0, 0.0, 0.0, 1.0, 7.0]], dtype=DOUBLE)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # δ3 = 1 + 0 − 3 = −2, A3 = −2; δ2 = 0 + 3 − 2 = 1, A2 = 1 + ½(−2) = 0; δ1 = 0 + 2 − 1 = 1, A1 = 1 + ½·0 = 1
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 1.0, 0.0, -2.0, 0.0]], dtype=DOUBLE))
    torch.testing.assert_close(returns, torch.tensor([[0.0, 2.0, 2.0, 1.0, 0.0]], dtype=DOUBLE))


def test_gae_lambda_one_gives_monte_carlo_returns_and_lambda_zero_td():
    mask = torch.tensor([[1, 1, 1], [0, 1, 0]])
    values = torch.tensor([[0.5, -1.0, 2.0], [3.0, 0.25, 3.0]], dtype=DOUBLE)
    rewards = torch.tensor([[0.1, 0.2, 1.0], [0.0, -1.0, 0.0]], dtype=DOUBLE)
    _, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[1.3, 1.2, 1.0], [0.0, -1.0, 0.0]], dtype=DOUBLE))
    _, returns = gae(rewards, values, mask, gamma=0.5, lam=1.0)  # discounted sums
    torch.testing.assert_close(returns, torch.tensor([[0.1 + 0.1 + 0.25, 0.2 + 0.5, 1.0], [0.0, -1.0, 0.0]],
                                                     dtype=DOUBLE))
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.0)  # one-step TD targets r_t + V_{t+1}
    torch.testing.assert_close(returns, torch.tensor([[0.1 - 1.0, 0.2 + 2.0, 1.0], [0.0, -1.0, 0.0]], dtype=DOUBLE))
    torch.testing.assert_close(advantages, (returns - values) * mask)


def test_whiten_uses_only_masked_entries():
    values = torch.tensor([[1.0, 3.0, 100.0]], dtype=DOUBLE)
    out = whiten(values, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, 0.0]], dtype=DOUBLE), atol=1e-6, rtol=0)


def test_on_policy_gradient_is_minus_advantage_over_tokens():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], dtype=DOUBLE, requires_grad=True)
    adv = torch.tensor([[0.5, 1.0], [-0.5, 7.0]], dtype=DOUBLE)
    mask = torch.tensor([[1, 1], [1, 0]])
    zeros = torch.zeros(2, 2, dtype=DOUBLE)
    loss, metrics = ppo_loss(logp, logp.detach(), adv, zeros, zeros, zeros, mask)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -1.0], [0.5, 0.0]], dtype=DOUBLE) / 3)
    assert loss.item() == pytest.approx(-(0.5 + 1.0 - 0.5) / 3)
    assert metrics["clip_fraction"] == 0 and metrics["approx_kl"] == 0 and metrics["ratio_mean"] == 1


def test_policy_clipping_branches():
    old = torch.zeros(4, 1, dtype=DOUBLE)
    # ρ = e^0.5 = 1.65 or e^-0.5 = 0.61; clipped where the clipped term is the smaller one
    logp = torch.tensor([[0.5], [-0.5], [0.5], [-0.5]], dtype=DOUBLE, requires_grad=True)
    adv = torch.tensor([[1.0], [-1.0], [-1.0], [1.0]], dtype=DOUBLE)
    zeros = torch.zeros(4, 1, dtype=DOUBLE)
    loss, metrics = ppo_loss(logp, old, adv, zeros, zeros, zeros, torch.ones(4, 1), clip_eps=0.2)
    loss.backward()
    r_up, r_down = torch.exp(torch.tensor(0.5)).item(), torch.exp(torch.tensor(-0.5)).item()
    # rows 0, 1: clipped (no gradient); rows 2 (ρ > 1 + ε, A < 0) and 3 (ρ < 1 − ε, A > 0): unclipped
    assert logp.grad[0].item() == 0 and logp.grad[1].item() == 0
    assert logp.grad[2].item() == pytest.approx(r_up / 4) and logp.grad[3].item() == pytest.approx(-r_down / 4)
    assert metrics["clip_fraction"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(-(1.2 - 0.8 - r_up + r_down) / 4)


def test_value_clipping_branches():
    logp = torch.zeros(3, 1, dtype=DOUBLE)
    values = torch.tensor([[1.0], [3.0], [1.5]], dtype=DOUBLE, requires_grad=True)
    old = torch.tensor([[0.0], [2.9], [1.0]], dtype=DOUBLE)
    returns = torch.tensor([[2.0], [2.0], [1.0]], dtype=DOUBLE)
    loss, metrics = ppo_loss(logp, logp, torch.zeros(3, 1, dtype=DOUBLE), values, old, returns, torch.ones(3, 1),
                             value_clip=0.2, value_coef=1.0)
    loss.backward()
    # row 0: clipped V = 0.2, (0.2 − 2)² = 3.24 > (1 − 2)² = 1: the clipped branch, no gradient
    # row 1: |V − V_old| = 0.1 within the clip: both branches equal 1, gradient V − R̂ = 1
    # row 2: clipped V = 1.2, (1.2 − 1)² = 0.04 < (1.5 − 1)² = 0.25: the unclipped branch, gradient 0.5
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0 + 0.25) / 3)
    torch.testing.assert_close(values.grad, torch.tensor([[0.0], [1.0], [0.5]], dtype=DOUBLE) / 3)
    assert metrics["value_clip_fraction"].item() == pytest.approx(1 / 3)
    assert metrics["value_error"].item() == pytest.approx((1.0 + 1.0 + 0.25) / 3)
    unclipped, _ = ppo_loss(logp, logp, torch.zeros(3, 1, dtype=DOUBLE), values, old, returns, torch.ones(3, 1),
                            value_clip=None, value_coef=1.0)
    assert unclipped.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.25) / 3)


def test_ppo_loss_gradcheck_in_float64():
    torch.manual_seed(0)
    logp = (torch.randn(3, 4, dtype=DOUBLE) * 0.05).requires_grad_()  # ratios near 1: inside the clip
    values = torch.randn(3, 4, dtype=DOUBLE).requires_grad_()
    old_values = values.detach() + 0.01 * torch.randn(3, 4, dtype=DOUBLE)
    adv, ret = torch.randn(3, 4, dtype=DOUBLE), torch.randn(3, 4, dtype=DOUBLE)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]])

    def f(lp, v):
        return ppo_loss(lp, torch.zeros_like(lp), adv, v, old_values, ret, mask, value_clip=None)[0]

    assert torch.autograd.gradcheck(f, (logp, values))


def test_score_transforms_and_normalisation():
    p = torch.tensor([0.5, 0.75, 1.0])
    torch.testing.assert_close(pairwise_score(p, "centered"), torch.tensor([0.0, 0.25, 0.5]))
    torch.testing.assert_close(pairwise_score(p, "raw"), p)
    logit = pairwise_score(p, "logit")
    assert logit[0] == 0 and logit[1].item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert torch.isfinite(logit).all()
    torch.testing.assert_close(normalize_scores(torch.tensor([1.0, 3.0]), "batch"), torch.tensor([-1.0, 1.0]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="transform"):
        pairwise_score(p, "log")
