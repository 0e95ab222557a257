"""InternVLA-M1 losses: hand-computed values of the ε-loss and the co-training sum; PSS on known subspaces."""
import torch

from posttrain.losses.internvla import action_diffusion_loss, cotraining_loss, projection_space_similarity


def test_action_loss_is_the_mean_squared_noise_error_over_real_steps():
    predicted = torch.zeros(2, 3, 2)
    noise = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])
    loss, metrics = action_diffusion_loss(predicted, noise)
    # per-step means: (1, 2, 9) and (0, 1, 2) -> 15 / 6
    assert torch.isclose(loss, torch.tensor(15 / 6)) and torch.isclose(metrics["action_mse"], loss)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    masked, _ = action_diffusion_loss(predicted, noise, mask)
    assert torch.isclose(masked, torch.tensor((1 + 2 + 0) / 3))


def test_action_loss_gradient_points_the_prediction_at_the_noise():
    predicted = torch.zeros(1, 2, 2, requires_grad=True)
    noise = torch.tensor([[[1.0, -1.0], [0.5, 0.0]]])
    action_diffusion_loss(predicted, noise)[0].backward()
    assert torch.allclose(predicted.grad, -2 * noise / 4)


def test_cotraining_loss_adds_the_weighted_vlm_loss():
    loss, parts = cotraining_loss(torch.tensor(2.0), torch.tensor(3.0), 0.1)
    assert torch.isclose(loss, torch.tensor(2.3)) and set(parts) == {"action", "vlm"}
    alone, parts = cotraining_loss(torch.tensor(2.0), None, 0.1)
    assert alone.item() == 2.0 and set(parts) == {"action"}


def test_pss_is_one_for_the_same_span_zero_for_orthogonal_spans_and_the_overlap_in_between():
    e = torch.eye(6)
    same = projection_space_similarity(e[:, :2] @ torch.tensor([[1.0, 2.0], [3.0, -1.0]]), e[:, :2])
    assert torch.isclose(same, torch.tensor(1.0, dtype=torch.float64))
    assert projection_space_similarity(e[:, :2], e[:, 2:4]).abs() < 1e-12
    # span{e0, e1} vs span{e0, e2}: tr(P_s P_a) = 1, min rank 2
    half = projection_space_similarity(e[:, :2], torch.stack([e[:, 0], e[:, 2]], 1))
    assert torch.isclose(half, torch.tensor(0.5, dtype=torch.float64))
    # a 45° line against span{e0}: cos² = 1/2
    line = projection_space_similarity(e[:, :1], (e[:, 0] + e[:, 1])[:, None])
    assert torch.isclose(line, torch.tensor(0.5, dtype=torch.float64))
