"""EMMA's AdaMix: per-sample weights over a hybrid real + generated batch that move the behaviour-cloning loss towards
perceptually or kinematically hard samples.

The paper states only that each batch is re-weighted "according to policy performance" towards perceptually or
kinematically challenging samples. The formulas here are the reconstruction of ../shared/methods/emma.md §2.2, not
the authors' (which were not available):

    ℓ̃_i      = (1/R) Σ_r ℓ_{i,r} / L̄(noise level of noising r)          (noise_level_normalised_loss; ours)
    d_i^perc = ℓ̃_i / mean ℓ̃ over the renderings of i's source episode   (perceptual_difficulty)
    d_i^kin  = standardised kinematic complexity of the action chunk     (kinematic_complexity, kinematic_difficulty)
    d_i      = λ_p · z(d_i^perc) + λ_k · z(d_i^kin)                      (combined_difficulty; z: within the batch)
    w_i      = (1 − η) + η · |B| · softmax_j(d_j / τ)_i                  (adamix_weights; mean weight 1)
    L        = (1/|B|) Σ_i stopgrad(w_i) · ℓ_i                           (adamix_loss; uniform during warm-up)

ℓ̃ is this project's addition to the reconstruction: ℓ_i of a diffusion policy is its ε-loss at R random noise
levels, which the noise levels drawn dominate (`noise_level_normalised_loss`); with it off (`noise_bins: 0` in
lightning_modules/emma.py) ℓ̃ = ℓ.

All functions are pure: tensors in, tensors out; the running per-episode loss means live with the caller
(`update_episode_means` computes the next table; under DDP the caller sums `episode_sums` over the processes and
blends with `blend_episode_means`, so every process keeps the same table).
"""
from __future__ import annotations

import torch


def motion_and_gripper(actions: torch.Tensor, gripper_dim: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, H, A) -> the motion dimensions (N, H, A') and the gripper command (N, H), or None without a gripper."""
    if gripper_dim is None:
        return actions, None
    dim = gripper_dim % actions.shape[-1]
    keep = [d for d in range(actions.shape[-1]) if d != dim]
    return actions[..., keep], actions[..., dim]


def gripper_changes(actions: torch.Tensor, mask: torch.Tensor | None = None, gripper_dim: int = -1) -> torch.Tensor:
    """Whether the gripper command changes sign (open <-> close: a grasp or a release) inside each chunk.

    Args:
        actions: (N, H, A) action chunks.
        mask: (N, H) 1 on real steps, 0 on padding past the episode's end; None: all real.
    Returns: (N,) bool.
    """
    _, grip = motion_and_gripper(actions, gripper_dim)
    valid = torch.ones_like(grip, dtype=torch.bool) if mask is None else mask.bool()
    flips = (torch.sign(grip[:, 1:]) != torch.sign(grip[:, :-1])) & valid[:, 1:] & valid[:, :-1]  # (N, H-1)
    return flips.any(-1)


def kinematic_complexity(actions: torch.Tensor, mask: torch.Tensor | None = None,
                         gripper_dim: int | None = -1) -> torch.Tensor:
    """How much the commanded motion changes inside a chunk (reconstruction, spec §2.2):

        c_i = mean_t ‖Δa_t‖ + mean_t ‖Δ²a_t‖ + 1[the gripper command changes sign]

    over the motion dimensions (all but the gripper's), Δ taken along the chunk's time axis over real steps only
    (a mean over none is 0). The gripper enters only through the indicator: its ±1 command would otherwise swamp
    the end-effector deltas.

    Args:
        actions: (N, H, A) action chunks (H ≥ 1).
        mask: (N, H) 1 on real steps, 0 on padding; None: all real.
        gripper_dim: the gripper's action dimension; None: no gripper (no indicator, every dimension is motion).
    Returns: (N,) float32.
    """
    actions = actions.float()
    motion, _ = motion_and_gripper(actions, gripper_dim)
    valid = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device) if mask is None else mask.bool()
    velocity = motion[:, 1:] - motion[:, :-1]  # (N, H-1, A')
    valid_v = valid[:, 1:] & valid[:, :-1]
    jerk = velocity[:, 1:] - velocity[:, :-1]  # (N, H-2, A')
    valid_j = valid_v[:, 1:] & valid_v[:, :-1]
    complexity = masked_mean(velocity.norm(dim=-1), valid_v) + masked_mean(jerk.norm(dim=-1), valid_j)
    if gripper_dim is not None:
        complexity = complexity + gripper_changes(actions, mask, gripper_dim).float()
    return complexity


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, T) values, (N, T) bool -> (N,) mean over valid entries, 0 where there are none."""
    valid = valid.to(values.dtype)
    return (values * valid).sum(-1) / valid.sum(-1).clamp(min=1.0)


def kinematic_difficulty(complexity: torch.Tensor, dataset_mean: float, dataset_std: float,
                         per_sample_loss: torch.Tensor | None = None) -> torch.Tensor:
    """d^kin: the complexity standardised over the dataset, (c − μ) / σ. With `per_sample_loss` (the spec's option
    "multiplied by ℓ_i, so that only hard-and-not-yet-learned motions count") it is max((c − μ)/σ, 0) · ℓ_i: the
    clamp is a reconstructed choice, so that a high loss never makes an easy motion look easier still.

    Args:
        complexity: (N,) `kinematic_complexity` of the batch's chunks.
        dataset_mean, dataset_std: the complexity's mean and standard deviation over the training chunks.
        per_sample_loss: (N,) ℓ_i, or None.
    """
    standard = (complexity - dataset_mean) / max(dataset_std, 1e-8)
    if per_sample_loss is None:
        return standard
    return standard.clamp(min=0.0) * per_sample_loss.detach()


def group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each sample's mean over the samples of its group in the batch: (N,), (N,) int64 -> (N,)."""
    _, inverse = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, dtype=values.dtype, device=values.device).index_add(0, inverse, values)
    counts = torch.bincount(inverse).to(values.dtype)
    return (sums / counts)[inverse]


def perceptual_difficulty(per_sample_loss: torch.Tensor, reference_loss: torch.Tensor,
                          eps: float = 1e-8) -> torch.Tensor:
    """d^perc_i = ℓ_i / ℓ̄_e(i): how much worse the policy does on this rendering of a source episode than on that
    episode's renderings on average (real and generated alike). > 1: a rendering harder than its siblings.

    Args:
        per_sample_loss: (N,) ℓ_i.
        reference_loss: (N,) ℓ̄ of each sample's source episode: a running mean (`update_episode_means`, then
            indexed by episode) or, in-batch, `group_mean(per_sample_loss, episode)`.
    """
    return per_sample_loss.detach() / (reference_loss.detach() + eps)


def episode_sums(episode: torch.Tensor, per_sample_loss: torch.Tensor, episodes: int,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's loss sum and sample count per source episode: (N,) int64, (N,) -> (E,), (E,). Sums and counts of
    several processes' batches add up to those of their union (what DDP all-reduces)."""
    loss = per_sample_loss.detach().to(dtype)
    sums = torch.zeros(episodes, dtype=dtype, device=loss.device).index_add(0, episode, loss)
    counts = torch.zeros(episodes, dtype=dtype, device=loss.device).index_add(0, episode, torch.ones_like(loss))
    return sums, counts


def update_episode_means(means: torch.Tensor, seen: torch.Tensor, episode: torch.Tensor, per_sample_loss: torch.Tensor,
                         momentum: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """The next running mean of the loss per source episode: the batch's mean over each episode's samples enters
    an exponential moving average, m_e ← momentum · m_e + (1 − momentum) · ℓ̄_e^batch (the first sighting sets it).

    Args:
        means: (E,) running means; seen: (E,) bool, whether each mean was set yet.
        episode: (N,) int64 source-episode index of each sample; per_sample_loss: (N,).
    Returns: the new (means, seen); the inputs are not modified.
    """
    sums, counts = episode_sums(episode.to(means.device), per_sample_loss.to(means.device), len(means), means.dtype)
    return blend_episode_means(means, seen, sums, counts, momentum)


def blend_episode_means(means: torch.Tensor, seen: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor,
                        momentum: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """`update_episode_means` from the batch's per-episode loss sums and counts (`episode_sums`, possibly summed
    over processes): episodes with a count > 0 blend in sums / counts; the others keep their mean.

    Args:
        means, sums, counts: (E,); seen: (E,) bool.
    """
    sums, counts = sums.to(means), counts.to(means)
    present = counts > 0
    batch_mean = sums / counts.clamp(min=1.0)
    blended = torch.where(seen, momentum * means + (1.0 - momentum) * batch_mean, batch_mean)
    return torch.where(present, blended, means), seen | present


def standardise(values: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """z(·) within the batch (population std); a constant batch gives zeros."""
    values = values.float()
    std = values.std(unbiased=False)
    return torch.where(std > eps, (values - values.mean()) / std.clamp(min=eps), torch.zeros_like(values))


def combined_difficulty(perceptual: torch.Tensor, kinematic: torch.Tensor, lambda_p: float = 0.5,
                        lambda_k: float = 0.5) -> torch.Tensor:
    """d_i = λ_p · z(d_i^perc) + λ_k · z(d_i^kin), each standardised within the batch. (N,), (N,) -> (N,)."""
    return lambda_p * standardise(perceptual) + lambda_k * standardise(kinematic)


def adamix_weights(per_sample_loss: torch.Tensor, difficulty: torch.Tensor | None = None, temperature: float = 1.0,
                   mix_uniform: float = 0.5) -> torch.Tensor:
    """Per-sample weights, a softmax over the batch's difficulties mixed with uniform:

        w_i = (1 − η) + η · |B| · softmax_j(d_j / τ)_i,      mean_i w_i = 1,  w_i ≥ 1 − η

    detached (no gradient flows through the weights). η = `mix_uniform` (0: uniform weights, 1: the softmax alone),
    τ = `temperature`. `difficulty` None uses the standardised loss itself, z(ℓ).

    Args:
        per_sample_loss: (N,) ℓ_i.
        difficulty: (N,) d_i (e.g. `combined_difficulty`), or None.
    Returns: (N,) float32.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= mix_uniform <= 1.0:
        raise ValueError(f"mix_uniform must be in [0, 1], got {mix_uniform}")
    d = standardise(per_sample_loss.detach()) if difficulty is None else difficulty.detach().float()
    if d.shape != per_sample_loss.shape or d.dim() != 1:
        raise ValueError(f"difficulty must have the loss's shape (N,), got {tuple(d.shape)} vs "
                         f"{tuple(per_sample_loss.shape)}")
    n = d.numel()
    return (1.0 - mix_uniform) + mix_uniform * n * torch.softmax(d / temperature, dim=0)


def weight_mass(weights: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """The share of the batch's weight on `members` ((N,) bool): Σ_{i∈S} w_i / Σ_i w_i (the AdaMix diagnostics:
    generated vs real samples, grasp/release chunks). With uniform weights it is the members' share of samples."""
    weights = weights.detach().float()
    return (weights * members.float()).sum() / weights.sum().clamp(min=1e-12)


def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation of (N,) x and y (0 where either is constant): how much of a difficulty signal another
    quantity explains (`train/perceptual_noise_corr`)."""
    x, y = x.detach().float(), y.detach().float()
    x, y = x - x.mean(), y - y.mean()
    scale = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return torch.where(scale > 1e-12, (x * y).sum() / scale.clamp(min=1e-12), torch.zeros_like(scale))


def adamix_loss(per_sample_loss: torch.Tensor, difficulty: torch.Tensor | None = None, temperature: float = 1.0,
                mix_uniform: float = 0.5, step: int = 0, warmup_steps: int = 0,
                generated: torch.Tensor | None = None, grasp_release: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
    """L_AdaMix = (1/|B|) Σ_i stopgrad(w_i) · ℓ_i with `adamix_weights`, or the plain mean (w_i = 1) while
    `step < warmup_steps`, so that the weights follow from losses of a policy that has learned something.

    Args:
        per_sample_loss: (N,) ℓ_i (with gradient).
        difficulty: (N,) d_i, or None (z(ℓ)).
        step, warmup_steps: the optimiser step and the warm-up length.
        generated, grasp_release: (N,) bool, optional, for the weight-mass diagnostics.
    Returns: (loss, metrics) with the weights' max, min and the mass on generated and grasp/release samples.
    """
    if step < warmup_steps:
        weights = torch.ones_like(per_sample_loss, dtype=torch.float32).detach()
    else:
        weights = adamix_weights(per_sample_loss, difficulty, temperature, mix_uniform)
    loss = (weights.to(per_sample_loss.dtype) * per_sample_loss).mean()
    metrics = {"adamix_loss": loss.detach(), "weight_max": weights.max(), "weight_min": weights.min(),
               "active": torch.tensor(float(step >= warmup_steps))}
    if generated is not None:
        metrics["mass_generated"] = weight_mass(weights, generated)
        metrics["share_generated"] = generated.float().mean()
    if grasp_release is not None:
        metrics["mass_grasp_release"] = weight_mass(weights, grasp_release)
        metrics["share_grasp_release"] = grasp_release.float().mean()
    return loss, metrics


def per_sample_action_loss(predicted: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None,
                           repeats: int) -> torch.Tensor:
    """ℓ_i, the action expert's ε-loss of each sample (what AdaMix weights):

        ℓ_i = (1/R) Σ_r mean_{h real, a} (ε_{i,r} − ε̂_{i,r})²

    over its R noisings, the chunk's real steps and the action dimensions (the mean of these over the batch is
    `posttrain.losses.internvla.action_diffusion_loss` when every chunk has the same number of real steps).

    Args:
        predicted, noise: (B·R, H, A), rows of one sample consecutive (`repeat_interleave`).
        mask: (B·R, H) 1 on real steps; None: all. repeats: R.
    Returns: (B,).
    """
    return per_noising_action_loss(predicted, noise, mask).view(-1, repeats).mean(-1)


def per_noising_action_loss(predicted: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ℓ_{i,r}: (B·R, H, A), (B·R, H, A), (B·R, H) or None -> (B·R,), the squared error averaged over the action
    dimensions and the chunk's real steps."""
    squared = (predicted.float() - noise.float()).pow(2).mean(-1)  # (B·R, H)
    valid = torch.ones_like(squared) if mask is None else mask.to(squared.dtype)
    return (squared * valid).sum(-1) / valid.sum(-1).clamp(min=1.0)


def noise_level_bins(timesteps: torch.Tensor, num_timesteps: int, bins: int) -> torch.Tensor:
    """Each noising's noise-level bin: (N,) diffusion timesteps in [0, T) -> (N,) int64 in [0, bins)."""
    return (timesteps.long() * bins) // num_timesteps


def noise_level_normalised_loss(per_noising_loss: torch.Tensor, level: torch.Tensor, level_means: torch.Tensor,
                                repeats: int, eps: float = 1e-8) -> torch.Tensor:
    """The loss a sample's noisings show beyond what their noise levels predict (this project's addition to the
    reconstruction, docs/methods/emma.md):

        ℓ̃_i = (1/R) Σ_r ℓ_{i,r} / L̄_{k(i,r)}

    L̄_k: the running mean loss of noise-level bin k over all samples. A diffusion policy's ε-loss falls by orders
    of magnitude from low to high noise, so the raw ℓ_i of R random noisings ranks samples mostly by the noise
    levels they drew; ℓ̃_i ranks them by the policy's performance, which is what AdaMix is to weight by.

    Args:
        per_noising_loss: (B·R,) ℓ_{i,r}, rows of one sample consecutive; level: (B·R,) their bins
            (`noise_level_bins`); level_means: (K,) L̄ (`blend_episode_means` over the bins' `episode_sums`).
    Returns: (B,), detached.
    """
    ratio = per_noising_loss.detach().float() / (level_means.to(per_noising_loss.device)[level] + eps)
    return ratio.view(-1, repeats).mean(-1)


def transfer_loss(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The generator's denoising loss (spec §2.1, `L_DT`), over both views' pixels at once:

        L_DT = E_{t, ε} ‖ y − f_φ(x_t([V_scene, V_wrist]), t, [G_scene, G_wrist], E(attributes)) ‖²

    with y = ε or the velocity v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (the scheduler's prediction type).

    Args:
        predicted, target: (N, 3V, H, W).
    """
    loss = (predicted.float() - target.float()).pow(2).mean()
    return loss, {"mse": loss.detach()}
