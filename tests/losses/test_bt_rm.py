import math

import pytest
import torch

from posttrain.losses.bt_rm import bt_rm_loss


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    loss, metrics = bt_rm_loss(chosen, rejected)
    # margins 1 and −2: (log(1 + e^{−1}) + log(1 + e^{2})) / 2
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2)
    assert metrics["accuracy"].item() == 0.5 and metrics["rewards/margin"].item() == pytest.approx(-0.5)


def test_loss_is_invariant_to_a_shared_shift():
    chosen, rejected = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(bt_rm_loss(chosen, rejected)[0], bt_rm_loss(chosen + 3, rejected + 3)[0])
