import pytest
import torch

from posttrain.losses.sft import sft_loss


def test_token_average_over_response_tokens_only():
    logps = torch.tensor([[-1.0, -2.0, -9.0], [-4.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, metrics = sft_loss(logps, mask)
    assert loss.item() == pytest.approx((1 + 2 + 4) / 3)
    assert metrics["tokens"].item() == 3
