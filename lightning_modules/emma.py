"""EMMA's policy training (docs/methods/emma.md): the VLA (model=vla_tiny) on real + edited demonstrations
(`datamodules.emma.MixedRobotDataModule`), each sample's action-diffusion loss ℓ_i weighted by AdaMix
(`posttrain.losses.emma`), or uniformly (`adamix: false`, the uniform-mixing and single-source arms).

Every step: the batch through the planner, querying transformer and DiT as in InternVLA-M1's action loss (no
co-training), ℓ_{i,r} per sample and noising, ℓ_i their mean over the R noisings; with AdaMix on:

    ℓ̃_i      = mean_r ℓ_{i,r} / L̄_k(i,r)  L̄_k: running mean loss of noise-level bin k (`noise_bins` bins; 0: ℓ̃ = ℓ)
    d^perc_i = ℓ̃_i / m_e(i)             m_e: running (EMA) mean of ℓ̃ over the renderings of source episode e
                                        (both tables under DDP over every process's batch: sums and counts
                                        all-reduced)
    d^kin_i  = (c_i − μ_c) / σ_c        c_i: kinematic complexity of the chunk; μ_c, σ_c over the real chunks
    d_i      = λ_p z(d^perc) + λ_k z(d^kin);   w = (1 − η) + η |B| softmax(d / τ);   L = mean(stopgrad(w) · ℓ)

the weights uniform until the step passes `warmup_steps` (the tables are kept from the first step).

Logged every step, also with uniform weights: the weight mass on generated samples and on grasp/release chunks
beside their sample shares (`train/mass_generated`, `train/share_generated`, `train/mass_grasp_release`, ...);
with AdaMix, the correlation of d^perc with the samples' mean noise level (`train/perceptual_noise_corr`: near 0
when d^perc reads the policy and not the noise levels drawn).
"""
from __future__ import annotations

import sys

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_modules.base import PostTrainModule
from lightning_modules.vla_steps import check_robot_data, close_evaluator, planner_parameter_groups
from posttrain.losses.emma import (
    adamix_loss,
    blend_episode_means,
    combined_difficulty,
    correlation,
    episode_sums,
    gripper_changes,
    kinematic_complexity,
    kinematic_difficulty,
    noise_level_bins,
    noise_level_normalised_loss,
    per_noising_action_loss,
    perceptual_difficulty,
)
from posttrain.utils.config import check
from posttrain.utils.distributed import summed


class EMMAModule(PostTrainModule):
    """Args:
        model: a `VLAModel`.
        adamix: weight the samples by AdaMix after `warmup_steps` uniform steps; false: uniform throughout.
        temperature, mix_uniform, lambda_p, lambda_k: τ, η, λ_p, λ_k of the weights (spec defaults 1, 0.5, 0.5, 0.5).
        momentum: of the running loss means (per episode, per noise level);
        kinematic_times_loss: d^kin = max(z, 0) · ℓ̃_i.
        noise_bins: noise-level bins of ℓ̃ (0: the raw ℓ_i, the reconstruction without this project's addition).
        vlm_lr, action_lr: learning rates of the planner and of the other modules.
        seed: each step's noise, timesteps and dropout are a function of (seed, step).
    """

    def __init__(self, model, tokenizer, adamix: bool = True, warmup_steps: int = 50, temperature: float = 1.0,
                 mix_uniform: float = 0.5, lambda_p: float = 0.5, lambda_k: float = 0.5, momentum: float = 0.9,
                 kinematic_times_loss: bool = False, noise_bins: int = 10, vlm_lr: float = 1e-4,
                 action_lr: float = 1e-3, seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        check(temperature > 0, "method.temperature", f"must be > 0, got {temperature}")
        check(0 <= mix_uniform <= 1, "method.mix_uniform", f"must be in [0, 1], got {mix_uniform}")
        check(warmup_steps >= 0, "method.warmup_steps", f"must be >= 0, got {warmup_steps}")
        check(noise_bins >= 0, "method.noise_bins", f"must be >= 0, got {noise_bins}")
        timesteps = model.noise_scheduler.config.num_train_timesteps
        check(noise_bins <= timesteps, "method.noise_bins", f"at most the model's {timesteps} timesteps, got "
              f"{noise_bins}")
        check(vlm_lr > 0 and action_lr > 0, "method.vlm_lr", f"learning rates must be > 0 ({vlm_lr}, {action_lr})")
        head = model.planner.get_output_embeddings()
        if head is not None and head.weight is not model.planner.get_input_embeddings().weight:
            head.requires_grad_(False)  # no co-training: the planner's (untied) LM head is unused, so not trained
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.adamix, self.warmup_steps, self.temperature, self.mix_uniform = adamix, warmup_steps, temperature, \
            mix_uniform
        self.lambda_p, self.lambda_k, self.momentum = lambda_p, lambda_k, momentum
        self.kinematic_times_loss, self.vlm_lr, self.action_lr, self.seed = kinematic_times_loss, vlm_lr, \
            action_lr, seed
        self.noise_bins = noise_bins
        self.episode_means = self.episode_seen = None  # (E,) running loss means per source episode, on the CPU
        self.level_means = torch.zeros(noise_bins)  # (K,) running loss means per noise-level bin, on the CPU
        self.level_seen = torch.zeros(noise_bins, dtype=torch.bool)
        self.kinematics = (0.0, 1.0)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data, model = self.trainer.datamodule, self.model
        data.setup(stage)
        check_robot_data(data, model)
        if stage == "fit":
            model.set_statistics(data.statistics)
            self.kinematics = data.kinematic_statistics()
            if self.episode_means is None:
                self.episode_means = torch.zeros(data.source_count)
                self.episode_seen = torch.zeros(data.source_count, dtype=torch.bool)
        if hasattr(self.evaluator, "encode"):
            self.evaluator.encode = data.encode_observations

    def teardown(self, stage: str) -> None:
        close_evaluator(self.evaluator)

    def parameter_groups(self) -> list[dict]:
        return planner_parameter_groups(self.model, self.trainable_parameters(), self.vlm_lr, self.action_lr)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        torch.manual_seed(self.seed * 1_000_003 + self.global_step)

    def sample_losses(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ℓ_i (B,), the action expert's diffusion loss of each sample over its R noisings, and the noisings'
        ℓ_{i,r} and timesteps (B·R,)."""
        predicted, target, mask, timesteps = self.model.training_noisings(batch)
        per_noising = per_noising_action_loss(predicted, target, mask)  # (B·R,)
        return per_noising.view(-1, self.model.repeats).mean(-1), per_noising, timesteps

    def normalised_losses(self, losses: torch.Tensor, per_noising: torch.Tensor,
                          timesteps: torch.Tensor) -> torch.Tensor:
        """ℓ̃_i (B,): ℓ_i relative to what its noisings' noise levels predict (the noise-level table updated with
        this batch first, under DDP with every process's batch); ℓ_i itself with `noise_bins` 0."""
        if self.noise_bins == 0:
            return losses.detach()
        steps = self.model.noise_scheduler.config.num_train_timesteps
        level = noise_level_bins(timesteps, steps, self.noise_bins)  # (B·R,)
        self.level_means, self.level_seen = self.blended(self.level_means, self.level_seen, level, per_noising)
        return noise_level_normalised_loss(per_noising, level, self.level_means, self.model.repeats)

    def blended(self, means: torch.Tensor, seen: torch.Tensor, groups: torch.Tensor,
                values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A running-means table (per source episode or per noise-level bin; (G,), on the CPU) with the batch's
        values (N,) of groups (N,) blended in; under DDP every process's batch (the sums and counts summed in one
        all-reduce), so the processes keep one table."""
        totals = summed(torch.stack(episode_sums(groups, values, len(means))))  # (2, G) on the values' device
        return blend_episode_means(means, seen, totals[0].cpu(), totals[1].cpu(), self.momentum)

    def difficulty(self, normalised: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """d_i (B,) from ℓ̃ and the per-episode running means of ℓ̃ (updated with this batch first; under DDP with
        every process's batch, so the processes keep one table) and the chunks' kinematics; and d^perc (B,)."""
        source = batch["source"]
        self.episode_means, self.episode_seen = self.blended(self.episode_means, self.episode_seen, source, normalised)
        perceptual = perceptual_difficulty(normalised, self.episode_means[source.cpu()].to(normalised.device))
        complexity = kinematic_complexity(batch["actions"], batch["action_mask"])
        kinematic = kinematic_difficulty(complexity, *self.kinematics,
                                         per_sample_loss=normalised if self.kinematic_times_loss else None)
        return combined_difficulty(perceptual, kinematic, self.lambda_p, self.lambda_k), perceptual

    def training_step(self, batch, batch_idx):
        losses, per_noising, timesteps = self.sample_losses(batch)  # (B,), (B·R,), (B·R,)
        difficulty, extra = None, {}
        if self.adamix:
            difficulty, perceptual = self.difficulty(self.normalised_losses(losses, per_noising, timesteps), batch)
            noise_level = timesteps.float().view(-1, self.model.repeats).mean(-1)  # (B,)
            extra["perceptual_noise_corr"] = correlation(perceptual, noise_level)
        warmup = self.warmup_steps if self.adamix else sys.maxsize  # uniform arms: never on
        loss, metrics = adamix_loss(losses, difficulty, self.temperature, self.mix_uniform, self.global_step, warmup,
                                    generated=batch["generated"],
                                    grasp_release=gripper_changes(batch["actions"], batch["action_mask"]))
        self.log_metrics("train", {"loss": loss, "action_mse": losses.mean().detach(), **metrics, **extra},
                         batch_size=losses.shape[0])
        return loss

    def extra_state(self) -> dict:
        state = {"level_means": self.level_means.tolist(), "level_seen": self.level_seen.tolist()}
        if self.episode_means is not None:
            state.update(episode_means=self.episode_means.tolist(), episode_seen=self.episode_seen.tolist())
        return state

    def load_extra_state(self, state: dict) -> None:
        stored = len(state.get("level_means", []))  # a checkpoint from before the noise-level table: 0
        if stored != self.noise_bins:  # its episode means are of another loss (ℓ, or other bins): start afresh
            rank_zero_warn(f"the checkpoint's AdaMix tables were kept with method.noise_bins={stored}, this run has "
                           f"{self.noise_bins}: the per-episode and noise-level means start afresh")
            return
        if "episode_means" in state:
            self.episode_means = torch.tensor(state["episode_means"])
            self.episode_seen = torch.tensor(state["episode_seen"], dtype=torch.bool)
        if stored:
            self.level_means = torch.tensor(state["level_means"])
            self.level_seen = torch.tensor(state["level_seen"], dtype=torch.bool)
