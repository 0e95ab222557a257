"""EMMA's policy training (docs/methods/emma.md): the VLA (model=vla_tiny) on real + edited demonstrations
(`datamodules.emma.MixedRobotDataModule`), each sample's action-diffusion loss ℓ_i weighted by AdaMix
(`posttrain.losses.emma`), or uniformly (`adamix: false`, the uniform-mixing and single-source arms).

Every step: the batch through the planner, querying transformer and DiT as in InternVLA-M1's action loss (no
co-training), ℓ_i per sample over its R noisings; with AdaMix on and the step past `warmup_steps`:

    d^perc_i = ℓ_i / m_e(i)             m_e: running (EMA) mean of ℓ over the renderings of source episode e
                                        (under DDP over every process's batch: the sums and counts all-reduced)
    d^kin_i  = (c_i − μ_c) / σ_c        c_i: kinematic complexity of the chunk; μ_c, σ_c over the real chunks
    d_i      = λ_p z(d^perc) + λ_k z(d^kin);   w = (1 − η) + η |B| softmax(d / τ);   L = mean(stopgrad(w) · ℓ)

Logged every step, also with uniform weights: the weight mass on generated samples and on grasp/release chunks
beside their sample shares (`train/mass_generated`, `train/share_generated`, `train/mass_grasp_release`, ...).
"""
from __future__ import annotations

import sys

import torch

from lightning_modules.base import PostTrainModule
from lightning_modules.vla_steps import check_robot_data, close_evaluator, planner_parameter_groups
from posttrain.losses.emma import (
    adamix_loss,
    blend_episode_means,
    combined_difficulty,
    episode_sums,
    gripper_changes,
    kinematic_complexity,
    kinematic_difficulty,
    per_sample_action_loss,
    perceptual_difficulty,
)
from posttrain.utils.config import check
from posttrain.utils.distributed import summed


class EMMAModule(PostTrainModule):
    """Args:
        model: a `VLAModel`.
        adamix: weight the samples by AdaMix after `warmup_steps` uniform steps; false: uniform throughout.
        temperature, mix_uniform, lambda_p, lambda_k: τ, η, λ_p, λ_k of the weights (spec defaults 1, 0.5, 0.5, 0.5).
        momentum: of the per-episode running loss means; kinematic_times_loss: d^kin = max(z, 0) · ℓ_i.
        vlm_lr, action_lr: learning rates of the planner and of the other modules.
        seed: each step's noise, timesteps and dropout are a function of (seed, step).
    """

    def __init__(self, model, tokenizer, adamix: bool = True, warmup_steps: int = 50, temperature: float = 1.0,
                 mix_uniform: float = 0.5, lambda_p: float = 0.5, lambda_k: float = 0.5, momentum: float = 0.9,
                 kinematic_times_loss: bool = False, vlm_lr: float = 1e-4, action_lr: float = 1e-3, seed: int = 0,
                 optimizer=None, scheduler=None, evaluator=None):
        check(temperature > 0, "method.temperature", f"must be > 0, got {temperature}")
        check(0 <= mix_uniform <= 1, "method.mix_uniform", f"must be in [0, 1], got {mix_uniform}")
        check(warmup_steps >= 0, "method.warmup_steps", f"must be >= 0, got {warmup_steps}")
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
        self.episode_means = self.episode_seen = None  # (E,) running loss means per source episode, on the CPU
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

    def sample_losses(self, batch: dict) -> torch.Tensor:
        """ℓ_i (B,): the action expert's diffusion loss of each sample over its R noisings."""
        predicted, target, mask = self.model.training_prediction(batch)
        return per_sample_action_loss(predicted, target, mask, self.model.repeats)

    def difficulty(self, losses: torch.Tensor, batch: dict) -> torch.Tensor:
        """d_i (B,) from the per-episode running means (updated with this batch first; under DDP with every process's
        batch, so the processes keep one table) and the chunks' kinematics."""
        source = batch["source"]
        sums, counts = episode_sums(source, losses, len(self.episode_means))  # (E,), (E,) on the loss's device
        totals = summed(torch.stack([sums, counts]))  # (2, E): one all-reduce of both under DDP
        self.episode_means, self.episode_seen = blend_episode_means(self.episode_means, self.episode_seen,
                                                                    totals[0].cpu(), totals[1].cpu(), self.momentum)
        perceptual = perceptual_difficulty(losses, self.episode_means[source.cpu()].to(losses.device))
        complexity = kinematic_complexity(batch["actions"], batch["action_mask"])
        kinematic = kinematic_difficulty(complexity, *self.kinematics,
                                         per_sample_loss=losses if self.kinematic_times_loss else None)
        return combined_difficulty(perceptual, kinematic, self.lambda_p, self.lambda_k)

    def training_step(self, batch, batch_idx):
        losses = self.sample_losses(batch)  # (B,)
        difficulty = self.difficulty(losses, batch) if self.adamix else None
        warmup = self.warmup_steps if self.adamix else sys.maxsize  # uniform arms: never on
        loss, metrics = adamix_loss(losses, difficulty, self.temperature, self.mix_uniform, self.global_step, warmup,
                                    generated=batch["generated"],
                                    grasp_release=gripper_changes(batch["actions"], batch["action_mask"]))
        self.log_metrics("train", {"loss": loss, "action_mse": losses.mean().detach(), **metrics},
                         batch_size=losses.shape[0])
        return loss

    def extra_state(self) -> dict:
        if self.episode_means is None:
            return {}
        return {"episode_means": self.episode_means.tolist(), "episode_seen": self.episode_seen.tolist()}

    def load_extra_state(self, state: dict) -> None:
        if "episode_means" in state:
            self.episode_means = torch.tensor(state["episode_means"])
            self.episode_seen = torch.tensor(state["episode_seen"], dtype=torch.bool)
