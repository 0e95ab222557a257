import math

import pytest
import torch

from posttrain.losses.grpo import grpo_loss
from posttrain.losses.nft import nft_loss, straight_through_clamp_min
from posttrain.losses.rft import rft_loss
from posttrain.models import tiny_llama
from posttrain.rollouts import group_advantages, policy_logprobs

DOUBLE = torch.float64


def one_token(logp, logp_old, correct, r_hat, **kwargs):
    lp = torch.tensor([[logp]], dtype=DOUBLE, requires_grad=True)
    loss, metrics = nft_loss(lp, torch.tensor([[logp_old]], dtype=DOUBLE), torch.tensor([correct]),
                             torch.tensor([r_hat], dtype=DOUBLE), torch.ones(1, 1), normalizer=1.0, **kwargs)
    loss.backward()
    return loss.item(), lp.grad.item(), metrics


def test_positive_token_is_minus_log_ratio_times_weight():
    loss, grad, _ = one_token(-1.0, -1.5, 1, 0.25)
    assert loss == pytest.approx(-0.75 * 0.5)
    assert grad == pytest.approx(-0.75)


def test_negative_token_hand_computed_below_the_clip():
    r, logp, old = 0.25, -1.5, -1.0  # R = e^-0.5 < 1, so x > 1 = ε: no clip
    ratio = math.exp(logp - old)
    x = (1 - r * ratio) / (1 - r)
    loss, grad, metrics = one_token(logp, old, 0, r)
    assert loss == pytest.approx(-(1 - r) * math.log(x))
    # dL/dlogp = ω · r/(1 − r) · R / x
    assert grad == pytest.approx((1 - r) * r / (1 - r) * ratio / x)
    assert metrics["clip_fraction"] == 0


def test_negative_token_clip_keeps_the_gradient():
    r, logp, old = 0.5, -0.5, -1.0  # R = e^0.5 > 1 so x < ε = 1: value clipped, gradient straight through
    ratio = math.exp(logp - old)
    assert (1 - r * ratio) / (1 - r) < 1  # x < ε: the clipped branch
    loss, grad, metrics = one_token(logp, old, 0, r)
    assert loss == pytest.approx(0.0)  # −log max(x, 1) = 0
    assert grad == pytest.approx((1 - r) * r / (1 - r) * ratio / 1.0)  # 1/max(x, ε) = 1
    assert grad > 0  # descent lowers log π on the wrong token
    assert metrics["clip_fraction"] == 1


def test_no_nan_when_the_negative_argument_crosses_zero():
    loss, grad, _ = one_token(0.0, -3.0, 0, 0.9)  # R = e^3, 1 − r̂R < 0
    assert math.isfinite(loss) and math.isfinite(grad)


def test_straight_through_clamp():
    x = torch.tensor([0.5, 2.0], dtype=DOUBLE, requires_grad=True)
    y = straight_through_clamp_min(x, 1.0)
    y.sum().backward()
    assert y.tolist() == [1.0, 2.0] and x.grad.tolist() == [1.0, 1.0]


def test_neg_weight_zero_and_omega_one_is_rft():
    torch.manual_seed(0)
    logp = torch.randn(6, 5, dtype=DOUBLE, requires_grad=True)
    correct = torch.tensor([1, 0, 1, 1, 0, 0])
    mask = torch.rand(6, 5) > 0.3
    r_hat = torch.full((6,), 0.5, dtype=DOUBLE)
    nft, _ = nft_loss(logp, logp.detach(), correct, r_hat, mask, omega="1", neg_weight=0.0, normalizer=7.0)
    (g_nft,) = torch.autograd.grad(nft, logp)
    rft, _ = rft_loss(logp, correct, mask, normalizer=7.0)
    (g_rft,) = torch.autograd.grad(rft, logp)
    torch.testing.assert_close(g_nft, g_rft)


# ---- the equivalence of paper Props. 4.1/4.2 -------------------------------------------------------------------

def on_policy_batch(num_prompts=3, k=4, seed=0):
    """A tiny float64 model, K sampled-looking responses per prompt (random tokens, random lengths) and 0/1 rewards
    with one mixed group per r̂ plus one all-correct and one all-wrong group."""
    model, tok = tiny_llama(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, seed=seed)
    model = model.to(DOUBLE)
    g = torch.Generator().manual_seed(seed)
    rows, plen, width = num_prompts * k + 2 * k, 4, 11
    input_ids = torch.randint(4, len(tok), (rows, width), generator=g)
    for i in range(0, rows, k):
        input_ids[i : i + k, :plen] = input_ids[i, :plen]  # a group shares its prompt
    lengths = torch.randint(2, width - plen + 1, (rows,), generator=g)
    positions = torch.arange(width)
    attention_mask = (positions < plen + lengths[:, None]).long()
    labels = torch.where((positions >= plen) & attention_mask.bool(), input_ids, torch.full_like(input_ids, -100))
    rewards = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=DOUBLE)
    return model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, rewards[: rows // k]


def parameter_grad(model, loss_fn):
    model.zero_grad()
    loss_fn().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


@pytest.mark.parametrize("omega, scale", [("1-r", False), ("grpo", True)])
def test_nft_gradient_equals_grpo_gradient_strictly_on_policy(omega, scale):
    """Paper Props. 4.1/4.2: one update at π_θ = π_old (R = 1), ε ≤ 1, r̂ = mean of the group's K binary rewards,
    groups with r̂ ∈ {0, 1} dropped by NFT (they have A = 0 in GRPO), the same token-sum normalisation. ω = 1 − r̂
    matches Dr. GRPO (A = r − mean); ω = sqrt((1 − r̂)/r̂) matches GRPO with population-std advantages."""
    model, rows, rewards = on_policy_batch()
    k = rewards.shape[1]
    mask = rows["labels"][:, 1:] != -100
    with torch.no_grad():
        logp_old = policy_logprobs(model, rows)  # the same snapshot: R = 1 exactly
    r_hat = rewards.mean(-1)  # (P,)
    mixed = ((r_hat > 0) & (r_hat < 1)).repeat_interleave(k)  # (R,)

    def nft():
        logp = policy_logprobs(model, rows)
        return nft_loss(logp[mixed], logp_old[mixed], rewards.flatten()[mixed], r_hat.repeat_interleave(k)[mixed],
                        mask[mixed], eps=1.0, omega=omega, normalizer=10.0)[0]

    def grpo():
        logp = policy_logprobs(model, rows)
        advantages = group_advantages(rewards, scale=scale, eps=0.0).flatten()
        return grpo_loss(logp, logp_old, advantages, mask, clip_eps=0.2, aggregation="token-sum", normalizer=10.0)[0]

    g_nft, g_grpo = parameter_grad(model, nft), parameter_grad(model, grpo)
    assert g_nft.abs().max() > 1e-3  # a real gradient, not two zeros
    torch.testing.assert_close(g_nft, g_grpo, rtol=1e-6, atol=1e-9)


def test_nft_and_grpo_differ_off_policy():
    """Off-policy (R ≠ 1) the two objectives clip differently, so the equivalence is specific to R = 1."""
    model, rows, rewards = on_policy_batch(num_prompts=3)
    k = rewards.shape[1]
    mask = rows["labels"][:, 1:] != -100
    with torch.no_grad():
        logp_old = policy_logprobs(model, rows) + 0.5 * torch.randn(mask.shape, dtype=DOUBLE)
    r_hat = rewards.mean(-1).repeat_interleave(k)
    g_nft = parameter_grad(model, lambda: nft_loss(policy_logprobs(model, rows), logp_old, rewards.flatten(), r_hat,
                                                   mask, normalizer=10.0)[0])
    adv = group_advantages(rewards, scale=False).flatten()
    g_grpo = parameter_grad(model, lambda: grpo_loss(policy_logprobs(model, rows), logp_old, adv, mask,
                                                     normalizer=10.0)[0])
    assert not torch.allclose(g_nft, g_grpo, rtol=1e-3)
