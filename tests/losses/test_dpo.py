import math

import pytest
import torch

from posttrain.losses.dpo import dpo_loss


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_hand_computed_sigmoid_and_metrics():
    # h = (-1 - -2) - (-3 - -2.5) = 1.5; beta h = 0.75
    loss, metrics = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)))
    assert metrics["rewards/chosen"].item() == pytest.approx(0.5)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.25)
    assert metrics["rewards/margins"].item() == pytest.approx(0.75)
    assert metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == -1.0 and metrics["logps/rejected"].item() == -3.0


def test_batch_mean_and_accuracy_count_only_strictly_higher_chosen_rewards():
    # h = 2, 0, -2 at beta 1: losses log(1+e^-2), log 2, log(1+e^2); accuracies: 1, 0 (tie), 0
    zeros = torch.zeros(3, dtype=torch.float64)
    loss, metrics = dpo_loss(t(0.0, -1.0, -3.0), t(-2.0, -1.0, -1.0), zeros, zeros, beta=1.0)
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert loss.item() == pytest.approx(expected)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)
    assert metrics["rewards/margins"].item() == pytest.approx(0.0)


def test_label_smoothing_value_and_its_finite_optimum():
    eps, beta = 0.2, 0.5
    loss, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=beta, label_smoothing=eps)
    assert loss.item() == pytest.approx(0.8 * math.log1p(math.exp(-0.75)) + 0.2 * math.log1p(math.exp(0.75)))

    def grad_at(h: float) -> float:  # dL/d log π(y_w) at margin h
        chosen = t(h, grad=True)
        dpo_loss(chosen, t(0.0), t(0.0), t(0.0), beta=beta, label_smoothing=eps)[0].backward()
        return chosen.grad.item()

    optimum = math.log((1 - eps) / eps) / beta  # σ(β h*) = 1 − ε
    assert grad_at(optimum) == pytest.approx(0.0, abs=1e-12)
    assert grad_at(optimum - 1.0) < 0 < grad_at(optimum + 1.0)  # pulled back to h* from both sides
    assert grad_at(0.0) == pytest.approx(-beta * (1 - 2 * eps) / 2)  # smoothing shrinks the push at h = 0


def test_gradient_raises_chosen_and_lowers_rejected_and_leaves_the_reference_alone():
    for loss_type in ("sigmoid", "ipo", "hinge"):
        chosen, rejected = t(-2.0, grad=True), t(-2.0, grad=True)
        reference = t(-2.0)
        lengths = torch.tensor([2.0], dtype=torch.float64)
        loss, _ = dpo_loss(chosen, rejected, reference, reference, beta=0.1, loss_type=loss_type,
                           chosen_lengths=lengths, rejected_lengths=lengths)
        loss.backward()
        assert chosen.grad.item() < 0 < rejected.grad.item(), loss_type  # gradient descent: y_w up, y_l down
        assert chosen.grad.item() == pytest.approx(-rejected.grad.item()), loss_type
    # at π_θ = π_ref the sigmoid gradient is exactly ∓β/2
    chosen, rejected = t(-2.0, grad=True), t(-5.0, grad=True)
    dpo_loss(chosen, rejected, t(-2.0), t(-5.0), beta=0.3)[0].backward()
    assert chosen.grad.item() == pytest.approx(-0.15) and rejected.grad.item() == pytest.approx(0.15)


def test_ipo_averages_over_tokens():
    # chosen: 2 tokens, ratio (-4 - -6) / 2 = 1; rejected: 3 tokens, ratio 0; h̄ = 1, target 1/(2·0.25) = 2
    chosen = t(-4.0, grad=True)
    loss, metrics = dpo_loss(chosen, t(-3.0), t(-6.0), t(-3.0), beta=0.25, loss_type="ipo",
                             chosen_lengths=torch.tensor([2.0]), rejected_lengths=torch.tensor([3.0]))
    assert loss.item() == pytest.approx(1.0)  # (1 - 2)²; the summed ratio 2 would have given 0
    assert metrics["rewards/chosen"].item() == pytest.approx(0.25)
    assert metrics["rewards/margins"].item() == pytest.approx(0.25)
    assert metrics["logps/chosen"].item() == -4.0  # the policy's summed log-prob, not the average
    loss.backward()
    assert chosen.grad.item() == pytest.approx(2 * (1 - 2) / 2)


def test_ipo_pushes_margins_back_down_above_its_target():
    beta = 0.5  # target h̄ = 1
    ones = torch.ones(1)
    for h, sign in ((0.5, -1), (1.0, 0), (1.5, 1)):
        chosen = t(h, grad=True)
        dpo_loss(chosen, t(0.0), t(0.0), t(0.0), beta=beta, loss_type="ipo", chosen_lengths=ones,
                 rejected_lengths=ones)[0].backward()
        assert chosen.grad.item() == pytest.approx(sign * 2 * abs(h - 1.0))


def test_hand_computed_hinge_is_flat_beyond_the_margin():
    zeros = torch.zeros(3, dtype=torch.float64)
    chosen = t(0.0, -4.0, 20.0, grad=True)
    # h = 2, -4, 20 at beta 0.1 -> relu(1 - 0.2) = 0.8, relu(1 + 0.4) = 1.4, relu(1 - 2) = 0
    loss, _ = dpo_loss(chosen, t(-2.0, 0.0, 0.0), zeros, zeros, beta=0.1, loss_type="hinge")
    assert loss.item() == pytest.approx((0.8 + 1.4 + 0.0) / 3)
    loss.backward()
    assert chosen.grad.tolist() == pytest.approx([-0.1 / 3, -0.1 / 3, 0.0])


def test_beta_limits():
    h = t(-1.0)  # a pair the policy gets wrong by one nat
    zero = t(0.0)
    # β → 0: every pair costs log 2 (sigmoid), 1 (hinge); the reference is all that matters
    assert dpo_loss(h, zero, zero, zero, beta=1e-8)[0].item() == pytest.approx(math.log(2))
    assert dpo_loss(h, zero, zero, zero, beta=1e-8, loss_type="hinge")[0].item() == pytest.approx(1.0)
    # β → ∞: sigmoid tends to β·max(0, −h); IPO tends to h̄² (a target margin of 0)
    assert dpo_loss(h, zero, zero, zero, beta=100.0)[0].item() == pytest.approx(100.0)
    assert dpo_loss(-h, zero, zero, zero, beta=100.0)[0].item() == pytest.approx(0.0, abs=1e-40)
    ones = torch.ones(1)
    ipo = dpo_loss(h, zero, zero, zero, beta=1e8, loss_type="ipo", chosen_lengths=ones, rejected_lengths=ones)
    assert ipo[0].item() == pytest.approx(1.0)


def test_reference_free_is_zero_reference_logps():
    zeros = torch.zeros(2, dtype=torch.float64)
    loss, metrics = dpo_loss(t(-1.0, -2.0), t(-2.0, -1.0), zeros, zeros, beta=1.0)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2)
    assert metrics["rewards/chosen"].item() == pytest.approx(-1.5)


@pytest.mark.parametrize("loss_type, smoothing", [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0)])
def test_gradcheck_float64(loss_type, smoothing):
    torch.manual_seed(0)
    inputs = [torch.randn(5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    fixed = [torch.randn(5, dtype=torch.float64) for _ in range(2)]
    lengths = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)

    def loss(a, b):
        return dpo_loss(a, b, *fixed, beta=0.3, loss_type=loss_type, label_smoothing=smoothing,
                        chosen_lengths=lengths, rejected_lengths=lengths.flip(0))[0]

    assert torch.autograd.gradcheck(loss, inputs)


def test_large_margins_are_stable():
    zero = torch.zeros(1)
    loss, _ = dpo_loss(torch.tensor([-1e4]), zero, zero, zero, beta=1.0, label_smoothing=0.1)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.9e4)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss_type": "kto"}, "loss_type"),
    ({"label_smoothing": 0.5}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing"),
    ({"loss_type": "ipo"}, "lengths"),
])
def test_bad_arguments(kwargs, match):
    zero = torch.zeros(1)
    with pytest.raises(ValueError, match=match):
        dpo_loss(zero, zero, zero, zero, beta=0.1, **kwargs)
