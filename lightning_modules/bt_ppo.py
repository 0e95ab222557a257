"""BT-PPO: PPO on a Bradley–Terry scalar reward model, the standard RLHF pipeline (Ouyang et al. 2022) that
Pairwise-RL (Xu et al., arXiv 2504.04950) compares against.

Each training batch of prompts is one rollout step: the policy (π_old for the step) samples `ppo.num_samples`
responses per prompt; the frozen BT reward model scores each `[bos] q y [eos]` row at its last token,
r_BT(q, y); the scores (standardised over the rollout batch by default) land on the last token of a per-token KL
penalty to π_ref; a critic on the policy's own rows gives GAE advantages; then `ppo.epochs` passes of clipped PPO
over shuffled mini-batches update the policy and the critic. The same PPO functions as pairwise PPO
(`lightning_modules.ppo`): only the score and the critic's input differ.
"""
from __future__ import annotations

import torch

from lightning_modules import ppo as ppo_lib
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.losses.ppo import NORMALIZATIONS, normalize_scores
from posttrain.models.value_head import ValueModel
from posttrain.utils.config import check, check_choice


class BTPPOModule(PostTrainModule):
    """Args:
        reward_model: the trained BT reward model, a `ValueModel` (from the run's `reward_model` stage); frozen.
        reward_normalization: "batch" ((r − mean)/std over the rollout batch) or "none" (the raw BT score).
        critic_init: "reward_model" (the RM's backbone, InstructGPT's choice) or "policy"; the value head starts
            at zero.
        ppo, generation, seed: as for pairwise PPO.
    """

    record_start_evaluation = True
    rebuilt_submodules = ppo_lib.FROZEN_SUBMODULES  # π_ref and the reward model: rebuilt by the run

    def __init__(self, model, tokenizer, reward_model=None, reward_normalization: str = "batch",
                 critic_init: str = "reward_model", ppo: dict | None = None, generation: dict | None = None,
                 seed: int = 0, optimizer=None, scheduler=None, evaluation=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluation)
        check(isinstance(reward_model, ValueModel), "reward_model",
              "BT-PPO needs a scalar reward model (a ValueModel): set the run's reward_model stage (e.g. method "
              f"bt_rm), got {type(reward_model).__name__}")
        check_choice(reward_normalization, NORMALIZATIONS, "method.reward_normalization")
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward_model"])
        self.ppo, self.generation = ppo_lib.settings(ppo, generation)
        self.reward_normalization, self.seed = reward_normalization, seed
        self.automatic_optimization = False
        self.reward_model = ppo_lib.freeze(reward_model)
        self.reference = frozen_copy(model)
        self.critic = ppo_lib.build_critic(ppo_lib.critic_source(critic_init, model, reward_model))

    def configure_optimizers(self):
        return ppo_lib.configure_optimizers(self)

    def training_step(self, batch, batch_idx):
        rollout = ppo_lib.rollout(self, batch, batch_idx)
        rewards = self.bt_rewards(rollout)  # (R,)
        scores = normalize_scores(rewards, self.reward_normalization)  # (R,)
        inputs = ppo_lib.critic_inputs(rollout, None, self.tokenizer.pad_token_id)
        metrics = ppo_lib.train_on_rollout(self, rollout, scores, inputs, batch_idx)
        self.log_metrics("train", {"reward": rewards.mean(), "reward_std": rewards.std(correction=0), **metrics,
                                   **ppo_lib.reward_gold_metrics(rewards, rollout.rewards)},
                         batch_size=rollout.num_prompts)

    @torch.no_grad()
    def bt_rewards(self, rollout) -> torch.Tensor:
        """r_BT(q, y) at each rollout row's last token, in mini-batch chunks: (R,)."""
        parts = []
        for index in ppo_lib.chunks(rollout.input_ids.shape[0], self.ppo["minibatch_size"], self.device):
            parts.append(self.reward_model.score(rollout.input_ids[index], rollout.attention_mask[index]))  # (b,)
        return torch.cat(parts)
