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

from lightning_modules import online
from lightning_modules import ppo as ppo_lib
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.losses.ppo import NORMALIZATIONS, normalize_scores
from posttrain.models.value_head import ValueModel
from posttrain.rollouts import collect_rollout
from posttrain.utils.config import check, check_choice


class BTPPOModule(PostTrainModule):
    """Args:
        reward_model: the trained BT reward model, a `ValueModel` (from the run's `reward_model` stage); frozen.
        reward: the gold `reward(example, completion) -> Verdict` (`conf/reward/`), logged as the rollouts'
            accuracy and never trained on.
        reward_normalization: "batch" ((r − mean)/std over the rollout batch) or "none" (the raw BT score).
        critic_init: "reward_model" (the RM's backbone, InstructGPT's choice) or "policy"; the value head starts
            at zero.
        ppo, generation, seed: as for pairwise PPO.
    """

    record_start_evaluation = True

    def __init__(self, model, tokenizer, reward_model=None, reward=None, reward_normalization: str = "batch",
                 critic_init: str = "reward_model", ppo: dict | None = None, generation: dict | None = None,
                 seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(isinstance(reward_model, ValueModel), "reward_model",
              "BT-PPO needs a scalar reward model (a ValueModel): set the run's reward_model stage (e.g. method "
              f"bt_rm), got {type(reward_model).__name__}")
        check(reward is not None, "method.reward", "BT-PPO needs the gold reward its accuracy is logged with")
        check_choice(reward_normalization, NORMALIZATIONS, "method.reward_normalization")
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward_model", "reward", "evaluator"])
        self.ppo, self.generation = ppo_lib.settings(ppo, generation)
        self.rollout_settings = ppo_lib.rollout_settings(self.ppo, self.generation)
        self.reward, self.reward_normalization, self.seed = reward, reward_normalization, seed
        self.automatic_optimization = False
        self.add_frozen("reward_model", reward_model, rebuildable=True)
        self.add_frozen("reference", frozen_copy(model), rebuildable=True)
        self.critic = ppo_lib.build_critic(ppo_lib.critic_source(critic_init, model, reward_model))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.processor = online.data_processor(self.trainer)

    def parameter_groups(self) -> list[dict]:
        return ppo_lib.parameter_groups(self.model, self.critic, self.ppo["critic_lr"])

    def configure_optimizers(self):
        ppo_lib.check_precision(self.trainer, self.ppo["grad_clip"])
        return super().configure_optimizers()

    def schedule_period(self) -> int:
        return ppo_lib.schedule_period(self.trainer, self.ppo)

    def training_step(self, batch, batch_idx):
        generator = online.step_generator(self, self.seed, batch_idx)
        rollout = collect_rollout(self.model, batch, self.processor, self.reward, self.rollout_settings, generator)
        rewards = self.bt_rewards(rollout)  # (R,)
        scores = normalize_scores(rewards, self.reward_normalization)  # (R,)
        inputs = ppo_lib.critic_inputs(rollout, None, self.tokenizer.pad_token_id)
        metrics = ppo_lib.train_on_rollout(self, self.critic, self.reference, rollout, scores, inputs, self.ppo,
                                           self.generation["temperature"],
                                           online.step_generator(self, self.seed + 1, batch_idx))
        metrics = {"reward": rewards.mean(), "reward_std": rewards.std(correction=0), **metrics,
                   **ppo_lib.reward_gold_metrics(rewards, rollout.rewards)}
        online.log_gathered(self, "train", online.weighted(metrics, rollout.num_prompts), rollout.num_prompts)

    @torch.no_grad()
    def bt_rewards(self, rollout) -> torch.Tensor:
        """r_BT(q, y) at each rollout row's last token, in mini-batch chunks: (R,)."""
        parts = []
        for index in ppo_lib.chunks(rollout.input_ids.shape[0], self.ppo["minibatch_size"], self.device):
            parts.append(self.reward_model.score(rollout.input_ids[index], rollout.attention_mask[index]))  # (b,)
        return torch.cat(parts)
