import math

import pytest
import torch

from posttrain.losses.spin import spin_loss


def test_hand_computed_sigmoid():
    # margin = beta * ((pr - orr) - (pg - og)) = 0.5 * ((-1 - -2) - (-3 - -2.5)) = 0.5 * (1 + 0.5) = 0.75
    loss, metrics = spin_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]),
                              beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)), rel=1e-6)
    assert metrics["rewards/real"].item() == pytest.approx(0.5)
    assert metrics["rewards/generated"].item() == pytest.approx(-0.25)
    assert metrics["rewards/margin"].item() == pytest.approx(0.75)
    assert metrics["rewards/accuracy"].item() == 1.0


def test_hand_computed_hinge_and_batch_mean():
    policy_real = torch.tensor([0.0, -4.0])
    policy_gen = torch.tensor([-2.0, 0.0])
    zeros = torch.zeros(2)
    # margins: 0.1 * 2 = 0.2 -> hinge 0.8 ; 0.1 * -4 = -0.4 -> hinge 1.4 ; mean 1.1
    loss, metrics = spin_loss(policy_real, policy_gen, zeros, zeros, beta=0.1, loss_type="hinge")
    assert loss.item() == pytest.approx(1.1)
    assert metrics["rewards/accuracy"].item() == 0.5


def test_loss_at_opponent_is_log2_and_identical_pairs_have_zero_gradient():
    real = torch.tensor([-3.0, -5.0], dtype=torch.float64, requires_grad=True)
    loss, _ = spin_loss(real, real, real.detach(), real.detach(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2.0))
    loss.backward()  # y' == y: the two log-prob terms cancel exactly
    assert torch.equal(real.grad, torch.zeros_like(real))


def test_gradcheck_float64():
    torch.manual_seed(0)
    inputs = [torch.randn(5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    fixed = [torch.randn(5, dtype=torch.float64) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda a, b: spin_loss(a, b, *fixed, beta=0.3)[0], inputs)


def test_large_margins_are_stable():
    loss, _ = spin_loss(torch.tensor([-1e4]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), beta=1.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1e4)


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        spin_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.1, loss_type="ipo")
