import math

import pytest
import torch

from posttrain.losses.pairwise_rm import pairwise_rm_loss


def test_verdict_cross_entropy_by_hand():
    # P(A ≻ B) = 0.8 with z = 1, then P(A ≻ B) = 0.3 with z = 0: −(log 0.8 + log 0.7) / 2
    logps = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7]]))
    loss, metrics = pairwise_rm_loss(logps, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert metrics["accuracy"].item() == 1.0
    assert metrics["prob_preferred"].item() == pytest.approx(0.75)


def test_gradient_moves_only_towards_the_label():
    logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss, metrics = pairwise_rm_loss(torch.log_softmax(logits, -1), torch.tensor([1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.5, 0.5]]))  # ∂L/∂l = softmax − onehot
    assert metrics["accuracy"].item() == 0.0  # a 0.5 verdict is not a correct one
