import math

import pytest
import torch

from posttrain.losses.distillspec import DIVERGENCES, distillspec_loss


def test_hand_computed_forward_kl_and_tvd():
    # one position, V = 2: p = (0.5, 0.5) from zero logits, q = softmax(0, log 3) = (0.25, 0.75)
    teacher = torch.zeros(1, 1, 2, dtype=torch.float64)
    student = torch.tensor([[[0.0, math.log(3.0)]]], dtype=torch.float64)
    mask = torch.ones(1, 1)
    fkl, metrics = distillspec_loss(student, teacher, mask, "forward_kl")
    assert fkl.item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    assert metrics["tvd"].item() == pytest.approx(0.25)
    assert metrics["expected_acceptance"].item() == pytest.approx(0.75)
    rkl, _ = distillspec_loss(student, teacher, mask, "reverse_kl")
    assert rkl.item() == pytest.approx(0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5))


def test_sequence_average_then_batch_mean_and_mask():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 7, dtype=torch.float64), torch.randn(2, 4, 7, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 0, 0]])
    loss, _ = distillspec_loss(s, t, mask, "jsd", beta=0.3)
    lq, lp = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    m = torch.logaddexp(math.log(0.3) + lp, math.log(0.7) + lq)
    d = 0.3 * (lp.exp() * (lp - m)).sum(-1) + 0.7 * (lq.exp() * (lq - m)).sum(-1)  # (2, 4)
    expected = ((d[0, :3].mean()) + d[1, 1]) / 2  # each sequence weighs the same, whatever its length
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    s2 = s.clone()
    s2[0, 3] += 100.0  # masked positions do not matter
    assert distillspec_loss(s2, t, mask, "jsd", beta=0.3)[0].item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_at_teacher_and_gradient_only_to_student(divergence):
    torch.manual_seed(1)
    teacher = torch.randn(3, 5, 9, dtype=torch.float64, requires_grad=True)
    student = teacher.detach().clone().requires_grad_(True)
    loss, metrics = distillspec_loss(student, teacher, torch.ones(3, 5), divergence)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert metrics["expected_acceptance"].item() == pytest.approx(1.0)
    student2 = torch.randn(3, 5, 9, dtype=torch.float64, requires_grad=True)
    distillspec_loss(student2, teacher, torch.ones(3, 5), divergence)[0].backward()
    assert teacher.grad is None and student2.grad.abs().sum() > 0


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_gradcheck_float64(divergence):
    torch.manual_seed(2)
    teacher = torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    student = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: distillspec_loss(s, teacher, mask, divergence)[0], (student,))


def test_jsd_at_beta_zero_and_one_is_forward_and_reverse_kl():
    """JSD[β] vanishes at both ends; as TRL's GKD, β = 0 means KL(p||q) and β = 1 KL(q||p), its limits
    JSD[β]/β and JSD[β]/(1-β)."""
    torch.manual_seed(3)
    s, t = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    mask = torch.ones(2, 3)
    forward = distillspec_loss(s, t, mask, "forward_kl")[0].item()
    reverse = distillspec_loss(s, t, mask, "reverse_kl")[0].item()
    assert forward != pytest.approx(reverse, rel=1e-3)
    assert distillspec_loss(s, t, mask, "jsd", beta=0.0)[0].item() == pytest.approx(forward, rel=1e-12)
    assert distillspec_loss(s, t, mask, "jsd", beta=1.0)[0].item() == pytest.approx(reverse, rel=1e-12)
    eps = 1e-6  # the limits, from inside (0, 1)
    assert distillspec_loss(s, t, mask, "jsd", beta=eps)[0].item() / eps == pytest.approx(forward, rel=1e-4)
    assert distillspec_loss(s, t, mask, "jsd", beta=1 - eps)[0].item() / eps == pytest.approx(reverse, rel=1e-4)
