"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300).

Each training batch of prompts is one rollout step: the current model (π_old for the step) samples K answers per
prompt, recording their per-token log-probs; advantages are the group-normalised rewards; the groups are split
into mini-batches, each one optimizer step on the clipped surrogate (plus an optional KL to the frozen start
model). Groups whose answers are all right or all wrong have A = 0; `filter_groups` skips them (their only
effect would be the KL term and the extra optimizer steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_modules import online
from lightning_modules.base import PostTrainModule, frozen_copy
from lightning_modules.online import OnlineSettings
from posttrain.losses.grpo import AGGREGATIONS, grpo_loss
from posttrain.models import sharding
from posttrain.rollouts import Rollout, group_advantages, mixed_prompts, policy_logprobs, rollout
from posttrain.utils.config import check, check_choice


@dataclass(frozen=True)
class GRPOSettings:
    """clip_eps: ε of the ratio clip [1 − ε, 1 + ε], > 0.
    scale_rewards: divide the centred rewards by the group's (population) std (GRPO); false = Dr. GRPO.
    kl_coef: β of the KL penalty to the frozen initial model; 0 disables it.
    aggregation: "token-sum" (sum over tokens / C, Dr. GRPO and the NFT paper) or "seq-mean" (GRPO's).
    filter_groups: skip prompts with all-equal rewards.
    clip_eps_high: ε_high of an asymmetric clip [1 − ε, 1 + ε_high] ("clip-higher"); None = ε.
    dual_clip: c > 1 bounds a negative-advantage token's term at c·A (dual clip); None = off.
    kl_clamp: clamps the per-token KL estimate to [−m, m]; None = off.
    """

    clip_eps: float = 0.2
    scale_rewards: bool = True
    kl_coef: float = 0.0
    aggregation: str = "token-sum"
    filter_groups: bool = True
    clip_eps_high: float | None = None
    dual_clip: float | None = None
    kl_clamp: float | None = None

    def __post_init__(self):
        check(self.clip_eps > 0, "method.clip_eps", f"must be > 0, got {self.clip_eps}")
        check(self.clip_eps_high is None or self.clip_eps_high > 0, "method.clip_eps_high",
              f"must be > 0 or null, got {self.clip_eps_high}")
        check(self.dual_clip is None or self.dual_clip > 1, "method.dual_clip",
              f"must be > 1 or null, got {self.dual_clip}")
        check(self.kl_clamp is None or self.kl_clamp > 0, "method.kl_clamp",
              f"must be > 0 or null, got {self.kl_clamp}")
        check(self.kl_coef >= 0, "method.kl_coef", f"must be >= 0, got {self.kl_coef}")
        check_choice(self.aggregation, AGGREGATIONS, "method.aggregation")


class GRPOModule(PostTrainModule):
    """Args:
        reward: `reward(example, completion) -> Verdict` scoring the rollouts (`conf/reward/`, e.g. the arithmetic
            verifier).
        num_samples: K, answers sampled per prompt (the group of the group statistics), >= 2.
        clip_eps, scale_rewards, kl_coef, aggregation, filter_groups, clip_eps_high, dual_clip, kl_clamp:
            `GRPOSettings`; kl_coef > 0 also keeps a frozen copy of the start model as π_ref.
        prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong, max_generation_batches, seed:
            as for NFT (`lightning_modules.online.online_settings`).
    """

    record_start_evaluation = True  # the start model's row, with the same evaluation (incl. sampled accuracy)
    shardable = True  # the policy's training forwards are padded to the same count on every process

    def __init__(self, model, tokenizer, reward, num_samples: int = 8, clip_eps: float = 0.2,
                 scale_rewards: bool = True, kl_coef: float = 0.0, aggregation: str = "token-sum",
                 filter_groups: bool = True, prompts_per_minibatch: int = 16, normalizer: float | None = None,
                 grad_clip: float | None = 1.0, generation: dict | None = None, truncated_is_wrong: bool = True,
                 max_generation_batches: int = 1, seed: int = 0, optimizer=None, scheduler=None, evaluator=None,
                 clip_eps_high: float | None = None, dual_clip: float | None = None, kl_clamp: float | None = None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward", "evaluator"])
        self.reward = reward
        self.loss_settings = GRPOSettings(clip_eps, scale_rewards, kl_coef, aggregation, filter_groups,
                                          clip_eps_high, dual_clip, kl_clamp)
        self.settings = online.online_settings(num_samples, prompts_per_minibatch, normalizer, grad_clip, generation,
                                               truncated_is_wrong, max_generation_batches, seed)
        self.reference = self.add_frozen("reference", frozen_copy(model), rebuildable=True) if kl_coef > 0 else None
        self.automatic_optimization = False  # several optimizer steps per rollout batch

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.processor = online.data_processor(self.trainer)

    def on_train_start(self) -> None:
        self.training_prompts = online.TrainingPrompts.of(self.trainer, self.device)

    def training_step(self, batch, batch_idx):
        generator = online.step_generator(self, self.settings.seed, batch_idx)
        with sharding.gathered(self.model):  # FSDP: generation on whole parameters (posttrain.models.sharding)
            samples = rollout(self.model, batch, self.processor, self.reward, self.settings.rollout, generator,
                              self.training_prompts)
        grpo_update(self, samples, self.loss_settings, self.settings, self.reference)

    def schedule_period(self) -> int:
        return online.schedule_period(self.trainer, self.settings)


def grpo_update(module, samples: Rollout, loss_settings: GRPOSettings, settings: OnlineSettings,
                reference=None, split: str = "train") -> None:
    """Group-normalised advantages of `samples` and one clipped-surrogate update (`grpo_loss`) of `module.model`
    per mini-batch of its kept groups, with a KL to the frozen `reference` when `loss_settings.kl_coef` > 0.
    Metrics are logged under `split`. SPARK calls it for both of its periods: its loss is this one on other
    prompts."""
    grouped = samples.grouped(samples.rewards)  # (P, K)
    advantages = group_advantages(grouped, scale=loss_settings.scale_rewards).flatten()  # (R,)
    device = samples.rewards.device
    kept = mixed_prompts(samples) if loss_settings.filter_groups else torch.arange(samples.num_prompts, device=device)
    check(loss_settings.kl_coef == 0 or reference is not None, "method.kl_coef", "> 0 needs a reference model")

    def loss_of(logp, rows, index):
        ref_logp = None
        if loss_settings.kl_coef > 0:
            with torch.no_grad():
                ref_logp = policy_logprobs(reference, rows, settings.rollout.temperature)  # (B, T-1)
        return grpo_loss(logp, rows["old_logps"], advantages[index], rows["mask"], clip_eps=loss_settings.clip_eps,
                         ref_logp=ref_logp, kl_coef=loss_settings.kl_coef, aggregation=loss_settings.aggregation,
                         normalizer=settings.loss_normalizer, clip_eps_high=loss_settings.clip_eps_high,
                         dual_clip=loss_settings.dual_clip, kl_clamp=loss_settings.kl_clamp)

    online.train_on_prompts(module, samples, kept, loss_of, settings, split=split)
