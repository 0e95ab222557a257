"""RFT: rejection-sampling fine-tuning (Yuan et al., arXiv 2308.01825), the supervised baseline of the NFT paper.

Each training batch of prompts is one rollout step: the current model samples K answers per prompt, the reward
keeps the correct ones, and the model does maximum likelihood on them in mini-batches of whole groups (wrong
answers are discarded). With `filter_groups` (default, as in the NFT paper's RFT run, which shares NFT's
pipeline) prompts whose answers are all right or all wrong are skipped too.
"""
from __future__ import annotations

import torch

from lightning_modules import online
from lightning_modules.base import PostTrainModule
from posttrain.losses.rft import rft_loss
from posttrain.models import sharding
from posttrain.rollouts import mixed_prompts, rollout


class RFTModule(PostTrainModule):
    """Args:
        reward: `reward(example, completion) -> Verdict` scoring the rollouts (`conf/reward/`).
        num_samples: K, answers sampled per prompt, >= 2.
        filter_groups: skip prompts with all-equal rewards (the NFT paper's pipeline); false keeps every correct
            answer, including those of all-correct prompts.
        prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong, max_generation_batches, seed:
            as for NFT.
    """

    record_start_evaluation = True  # the start model's row, with the same evaluation (incl. sampled accuracy)
    shardable = True  # the policy's training forwards are padded to the same count on every process

    def __init__(self, model, tokenizer, reward, num_samples: int = 8, filter_groups: bool = True,
                 prompts_per_minibatch: int = 16, normalizer: float | None = None, grad_clip: float | None = 1.0,
                 generation: dict | None = None, truncated_is_wrong: bool = True, max_generation_batches: int = 1,
                 seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward", "evaluator"])
        self.reward, self.filter_groups = reward, filter_groups
        self.settings = online.online_settings(num_samples, prompts_per_minibatch, normalizer, grad_clip, generation,
                                               truncated_is_wrong, max_generation_batches, seed)
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
        if self.filter_groups:
            kept = mixed_prompts(samples)
        else:  # prompts with at least one correct answer
            kept = torch.nonzero(samples.grouped(samples.rewards).amax(-1) > 0).flatten()

        def loss_of(logp, rows, index):
            return rft_loss(logp, rows["rewards"], rows["mask"], normalizer=self.settings.loss_normalizer)

        online.train_on_prompts(self, samples, kept, loss_of, self.settings)

    def schedule_period(self) -> int:
        return online.schedule_period(self.trainer, self.settings)
