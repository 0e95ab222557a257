"""AdaMix (posttrain/losses/emma.py) against hand-computed values: kinematic complexity, perceptual difficulty and
running episode means, the weights (softmax mixed with uniform, mean 1, no gradient), warm-up and diagnostics."""
import math

import pytest
import torch

from posttrain.losses.emma import (
    adamix_loss,
    adamix_weights,
    blend_episode_means,
    combined_difficulty,
    correlation,
    episode_sums,
    gripper_changes,
    group_mean,
    kinematic_complexity,
    kinematic_difficulty,
    noise_level_bins,
    noise_level_normalised_loss,
    per_noising_action_loss,
    per_sample_action_loss,
    perceptual_difficulty,
    standardise,
    transfer_loss,
    update_episode_means,
    weight_mass,
)
from posttrain.utils.distributed import summed


def chunks():
    # (N=2, H=3, A=4): Δxyz + gripper. Chunk 0 moves 1 in x, stops, and closes the gripper; chunk 1 holds still.
    return torch.tensor([[[0.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 1.0]],
                         [[0.5, 0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0]]])


def test_kinematic_complexity_by_hand():
    # chunk 0: ‖Δa‖ = 1, 0 -> 0.5; ‖Δ²a‖ = ‖(-1, 0, 0)‖ = 1 -> 1; the gripper flips -> 1; total 2.5. chunk 1: 0.
    torch.testing.assert_close(kinematic_complexity(chunks()), torch.tensor([2.5, 0.0]))
    # the last step is padding: one velocity (1), no jerk, no flip among real steps -> 1.
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(kinematic_complexity(chunks(), mask), torch.tensor([1.0, 0.0]))
    assert gripper_changes(chunks()).tolist() == [True, False] and gripper_changes(chunks(), mask).tolist() == [False,
                                                                                                                 False]
    # no gripper: every dimension is motion: ‖(1,0,0,0)‖, ‖(0,0,0,2)‖ -> 1.5; ‖(-1,0,0,2)‖ = √5
    torch.testing.assert_close(kinematic_complexity(chunks(), gripper_dim=None),
                               torch.tensor([1.5 + math.sqrt(5.0), 0.0]))
    single = kinematic_complexity(torch.zeros(3, 1, 4))  # one-step chunks: no difference at all
    torch.testing.assert_close(single, torch.zeros(3))


def test_kinematic_difficulty_standardises_and_optionally_gates_by_loss():
    complexity = torch.tensor([3.0, 1.0, 2.0])
    torch.testing.assert_close(kinematic_difficulty(complexity, 2.0, 0.5), torch.tensor([2.0, -2.0, 0.0]))
    loss = torch.tensor([0.5, 4.0, 1.0])
    torch.testing.assert_close(kinematic_difficulty(complexity, 2.0, 0.5, loss), torch.tensor([1.0, 0.0, 0.0]))


def test_perceptual_difficulty_relative_to_the_episode():
    loss, episode = torch.tensor([2.0, 1.0, 4.0]), torch.tensor([0, 0, 1])
    torch.testing.assert_close(group_mean(loss, episode), torch.tensor([1.5, 1.5, 4.0]))
    torch.testing.assert_close(perceptual_difficulty(loss, group_mean(loss, episode)),
                               torch.tensor([4 / 3, 2 / 3, 1.0]))


def test_running_episode_means():
    means, seen = torch.zeros(3), torch.zeros(3, dtype=torch.bool)
    means, seen = update_episode_means(means, seen, torch.tensor([0, 0, 1]), torch.tensor([2.0, 1.0, 4.0]), 0.9)
    torch.testing.assert_close(means, torch.tensor([1.5, 4.0, 0.0]))
    assert seen.tolist() == [True, True, False]
    means, seen = update_episode_means(means, seen, torch.tensor([0]), torch.tensor([3.0]), 0.9)
    torch.testing.assert_close(means, torch.tensor([0.9 * 1.5 + 0.1 * 3.0, 4.0, 0.0]))


def test_episode_sums_of_several_processes_give_the_means_of_their_union():
    """Under DDP the processes all-reduce (sum) `episode_sums`; the blended means are those of the whole batch."""
    ranks = [(torch.tensor([0, 0, 1]), torch.tensor([2.0, 1.0, 4.0])), (torch.tensor([0, 2]), torch.tensor([6.0, 5.0]))]
    parts = [episode_sums(episode, loss, 4) for episode, loss in ranks]
    sums, counts = parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]  # what the all-reduce computes
    union = episode_sums(torch.cat([r[0] for r in ranks]), torch.cat([r[1] for r in ranks]), 4)
    torch.testing.assert_close((sums, counts), union)
    torch.testing.assert_close(counts, torch.tensor([3.0, 1.0, 1.0, 0.0]))
    means, seen = blend_episode_means(torch.zeros(4), torch.zeros(4, dtype=torch.bool), sums, counts, 0.9)
    torch.testing.assert_close(means, torch.tensor([3.0, 4.0, 5.0, 0.0]))  # (2 + 1 + 6) / 3 for episode 0
    assert seen.tolist() == [True, True, True, False]
    alone, _ = update_episode_means(torch.zeros(4), torch.zeros(4, dtype=torch.bool), *ranks[0], 0.9)
    assert alone[0] == 1.5  # one process's own batch alone would disagree with the other's
    means, _ = blend_episode_means(means, seen, torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.zeros(4), 0.9)
    torch.testing.assert_close(means, torch.tensor([3.0, 4.0, 5.0, 0.0]))  # no sample: the means stay
    assert summed(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]  # no process group: the tensor as it is


def test_combined_difficulty_by_hand():
    # z([1, 3]) = [-1, 1] (population std 1); a constant signal standardises to zeros
    torch.testing.assert_close(standardise(torch.tensor([1.0, 3.0])), torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(combined_difficulty(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])),
                               torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(combined_difficulty(torch.tensor([1.0, 3.0]), torch.tensor([5.0, 1.0]), 0.25, 1.0),
                               torch.tensor([-0.25 + 1.0, 0.25 - 1.0]))


def test_weights_by_hand():
    loss = torch.tensor([1.0, 3.0])
    # softmax([0, ln 3]) = [1/4, 3/4]; w = 0.5 + 0.5 · 2 · [1/4, 3/4] = [0.75, 1.25]
    weights = adamix_weights(loss, torch.tensor([0.0, math.log(3.0)]), temperature=1.0, mix_uniform=0.5)
    torch.testing.assert_close(weights, torch.tensor([0.75, 1.25]))
    # τ = 2 halves the logits: softmax([0, ln 3 / 2]) = [1, √3] / (1 + √3); η = 1: the softmax alone
    weights = adamix_weights(loss, torch.tensor([0.0, math.log(3.0)]), temperature=2.0, mix_uniform=1.0)
    torch.testing.assert_close(weights, 2 * torch.tensor([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0)))
    # no difficulty: z(ℓ) = [-1, 1]; softmax = [1, e²]/(1 + e²)
    expected = 0.5 + torch.tensor([1.0, math.exp(2.0)]) / (1 + math.exp(2.0))
    torch.testing.assert_close(adamix_weights(loss), expected)
    torch.testing.assert_close(adamix_weights(loss, mix_uniform=0.0), torch.ones(2))
    many = adamix_weights(torch.rand(17), torch.randn(17), temperature=0.3, mix_uniform=0.8)
    torch.testing.assert_close(many.mean(), torch.tensor(1.0))
    assert many.min() >= 0.2 - 1e-6


def test_weights_reject_bad_settings():
    with pytest.raises(ValueError, match="temperature"):
        adamix_weights(torch.ones(2), temperature=0.0)
    with pytest.raises(ValueError, match="mix_uniform"):
        adamix_weights(torch.ones(2), mix_uniform=1.5)
    with pytest.raises(ValueError, match="difficulty must have the loss's shape"):
        adamix_weights(torch.ones(2), torch.ones(3))


def test_loss_value_gradient_and_warm_up():
    loss = torch.tensor([1.0, 3.0], requires_grad=True)
    difficulty = torch.log(loss)  # [0, ln 3], a function of ℓ: no gradient may flow through it
    total, metrics = adamix_loss(loss, difficulty, step=10, warmup_steps=5)
    torch.testing.assert_close(total, torch.tensor(2.25))  # (0.75 · 1 + 1.25 · 3) / 2
    total.backward()
    torch.testing.assert_close(loss.grad, torch.tensor([0.375, 0.625]))  # stopgrad(w) / |B|
    assert metrics["weight_max"] == pytest.approx(1.25) and metrics["active"] == 1.0
    loss.grad = None
    warm, metrics = adamix_loss(loss, difficulty, step=4, warmup_steps=5)
    torch.testing.assert_close(warm, torch.tensor(2.0))
    warm.backward()
    torch.testing.assert_close(loss.grad, torch.tensor([0.5, 0.5]))
    assert metrics["active"] == 0.0


def test_weight_mass_diagnostics():
    weights = torch.tensor([0.75, 1.25, 1.0, 1.0])
    generated = torch.tensor([False, True, True, False])
    torch.testing.assert_close(weight_mass(weights, generated), torch.tensor(2.25 / 4.0))
    _, metrics = adamix_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(3.0)]),
                             generated=torch.tensor([False, True]), grasp_release=torch.tensor([True, False]))
    torch.testing.assert_close(metrics["mass_generated"], torch.tensor(1.25 / 2.0))
    torch.testing.assert_close(metrics["mass_grasp_release"], torch.tensor(0.75 / 2.0))
    torch.testing.assert_close(metrics["share_generated"], torch.tensor(0.5))


def test_per_sample_action_loss_by_hand():
    # two samples, R = 2 noisings each, H = 2 steps, A = 1; the second sample's last step is padding
    predicted = torch.tensor([[[1.0], [3.0]], [[0.0], [1.0]], [[2.0], [5.0]], [[4.0], [9.0]]])
    noise = torch.zeros_like(predicted)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    losses = per_sample_action_loss(predicted, noise, mask, repeats=2)
    # sample 0: rows (1 + 9)/2 = 5 and (0 + 1)/2 = 0.5 -> 2.75; sample 1: rows 4 and 16 (padding left out) -> 10
    assert torch.allclose(losses, torch.tensor([2.75, 10.0]))
    everything = per_sample_action_loss(predicted, noise, None, repeats=4)
    assert torch.allclose(everything, torch.tensor([(5 + 0.5 + 14.5 + 48.5) / 4]))


def test_per_noising_loss_is_the_rows_of_the_per_sample_loss():
    predicted = torch.tensor([[[1.0], [3.0]], [[0.0], [1.0]]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(per_noising_action_loss(predicted, torch.zeros_like(predicted), mask),
                               torch.tensor([5.0, 0.0]))


def test_noise_level_bins_split_the_timesteps_evenly():
    assert noise_level_bins(torch.tensor([0, 9, 10, 55, 99]), 100, 10).tolist() == [0, 0, 1, 5, 9]
    assert noise_level_bins(torch.tensor([0, 99]), 100, 1).tolist() == [0, 0]


def test_normalising_by_the_noise_level_ranks_samples_by_the_policy_not_the_draw():
    # ℓ_{i,r} = g_i · f(level): the levels' losses f = 4 (low noise) and 1 (high noise); sample 0 is twice as hard
    # (g = 2) but drew high noise, sample 1 (g = 1) drew low noise
    level = torch.tensor([1, 1, 0, 0])  # R = 2 noisings per sample
    per_noising = torch.tensor([2.0, 2.0, 4.0, 4.0])
    raw = per_noising.view(2, 2).mean(-1)
    assert raw[0] < raw[1]  # the raw loss ranks the easier sample as harder
    normalised = noise_level_normalised_loss(per_noising, level, torch.tensor([4.0, 1.0]), repeats=2)
    torch.testing.assert_close(normalised, torch.tensor([2.0, 1.0]))


def test_correlation_by_hand():
    torch.testing.assert_close(correlation(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])),
                               torch.tensor(1.0))
    torch.testing.assert_close(correlation(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])),
                               torch.tensor(0.0))
    torch.testing.assert_close(correlation(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0])), torch.tensor(0.0))


def test_transfer_loss_is_the_mean_squared_error():
    loss, metrics = transfer_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))
    assert loss.item() == pytest.approx(2.5) and metrics["mse"].item() == pytest.approx(2.5)
