"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300).

Each training batch of prompts is one rollout step: the current model (π_old for the step) samples K answers per
prompt, recording their per-token log-probs; advantages are the group-normalised rewards; the groups are split
into mini-batches, each one optimizer step on the clipped surrogate (plus an optional KL to the frozen start
model). Groups whose answers are all right or all wrong have A = 0; `filter_groups` skips them (their only
effect would be the KL term and the extra optimizer steps).
"""
from __future__ import annotations

import torch

from lightning_modules import online
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.losses.grpo import AGGREGATIONS, grpo_loss
from posttrain.rollouts import group_advantages, mixed_prompts, policy_logprobs
from posttrain.utils.config import check, check_choice


class GRPOModule(PostTrainModule):
    """Args:
        clip_eps: ε of the ratio clip [1 − ε, 1 + ε], > 0.
        scale_rewards: divide the centred rewards by the group's (population) std (GRPO); false = Dr. GRPO.
        kl_coef: β of the KL penalty to the frozen initial model; 0 disables it (and the reference copy).
        aggregation: "token-sum" (sum over tokens / C, Dr. GRPO and the NFT paper) or "seq-mean" (GRPO's).
        filter_groups: skip prompts with all-equal rewards.
        prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong, max_generation_batches, seed:
            as for NFT.
    """

    record_start_evaluation = True  # the start model's row, with the same evaluation (incl. sampled accuracy)

    def __init__(self, model, tokenizer, clip_eps: float = 0.2, scale_rewards: bool = True, kl_coef: float = 0.0,
                 aggregation: str = "token-sum", filter_groups: bool = True, prompts_per_minibatch: int = 16,
                 normalizer: float | None = None, grad_clip: float | None = 1.0, generation: dict | None = None,
                 truncated_is_wrong: bool = True, max_generation_batches: int = 1, seed: int = 0,
                 optimizer=None, scheduler=None, evaluation=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluation)
        check(clip_eps > 0, "method.clip_eps", f"must be > 0, got {clip_eps}")
        check(kl_coef >= 0, "method.kl_coef", f"must be >= 0, got {kl_coef}")
        check_choice(aggregation, AGGREGATIONS, "method.aggregation")
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.clip_eps, self.scale_rewards, self.kl_coef, self.aggregation = clip_eps, scale_rewards, kl_coef, aggregation
        self.filter_groups = filter_groups
        online.configure(self, prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong,
                         max_generation_batches, seed)
        self.reference = frozen_copy(model) if kl_coef > 0 else None

    def training_step(self, batch, batch_idx):
        grpo_update(self, online.rollout(self, batch, batch_idx))

    def schedule_period(self) -> int:
        return int(self.trainer.estimated_stepping_batches) * online.updates_per_batch(self, self.prompts_per_minibatch)


def grpo_update(module, rollout, split: str = "train") -> None:
    """Group-normalised advantages of `rollout` and one clipped-surrogate update (`grpo_loss`) per mini-batch of its
    kept groups, with the settings `module` holds (clip_eps, scale_rewards, kl_coef, aggregation, filter_groups,
    reference and those of `online.configure`). Metrics are logged under `split`. SPARK calls it for both of its
    periods: its loss is this one on other prompts."""
    k = rollout.num_samples
    advantages = group_advantages(rollout.grouped(rollout.rewards), scale=module.scale_rewards).flatten()  # (R,)
    kept = mixed_prompts(rollout) if module.filter_groups else torch.arange(rollout.num_prompts, device=module.device)
    normalizer = module.normalizer or module.prompts_per_minibatch * k

    def loss_of(logp, rows, index):
        ref_logp = None
        if module.reference is not None:
            with torch.no_grad():
                ref_logp = policy_logprobs(module.reference, rows, module.generation["temperature"])  # (B, T-1)
        return grpo_loss(logp, rows["old_logps"], advantages[index], rows["mask"], clip_eps=module.clip_eps,
                         ref_logp=ref_logp, kl_coef=module.kl_coef, aggregation=module.aggregation,
                         normalizer=normalizer)

    online.train_on_prompts(module, rollout, kept, loss_of, split=split)
