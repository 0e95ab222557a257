import torch

from posttrain.losses.rft import rft_loss


def test_only_correct_samples_carry_loss():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -2.0]], requires_grad=True)
    loss, metrics = rft_loss(logp, torch.tensor([1, 0]), torch.tensor([[1, 1], [1, 1]]), normalizer=4.0)
    loss.backward()
    assert loss.item() == 1.0 and metrics["nll"].item() == 2.0 and metrics["kept_tokens"].item() == 2
    assert logp.grad.tolist() == [[-0.25, -0.25], [0.0, 0.0]]


def test_no_correct_sample_gives_zero_loss():
    logp = torch.randn(2, 3, requires_grad=True)
    loss, _ = rft_loss(logp, torch.zeros(2), torch.ones(2, 3))
    assert loss.item() == 0.0
