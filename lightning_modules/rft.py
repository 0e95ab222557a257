"""RFT: rejection-sampling fine-tuning (Yuan et al., arXiv 2308.01825), the supervised baseline of the NFT paper.

Each training batch of prompts is one rollout step: the current model samples K answers per prompt, the verifier
keeps the correct ones, and the model does maximum likelihood on them in mini-batches of whole groups (wrong
answers are discarded). With `filter_groups` (default, as in the NFT paper's RFT run, which shares NFT's
pipeline) prompts whose answers are all right or all wrong are skipped too.
"""
from __future__ import annotations

import torch

from lightning_modules import online
from lightning_modules.base import PostTrainModule
from posttrain.losses.rft import rft_loss
from posttrain.rollouts import mixed_prompts


class RFTModule(PostTrainModule):
    """Args:
        filter_groups: skip prompts with all-equal rewards (the NFT paper's pipeline); false keeps every correct
            answer, including those of all-correct prompts.
        prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong, max_generation_batches, seed:
            as for NFT.
    """

    record_start_evaluation = True  # the start model's row, with the same evaluation (incl. sampled accuracy)

    def __init__(self, model, tokenizer, filter_groups: bool = True, prompts_per_minibatch: int = 16,
                 normalizer: float | None = None, grad_clip: float | None = 1.0, generation: dict | None = None,
                 truncated_is_wrong: bool = True, max_generation_batches: int = 1, seed: int = 0,
                 optimizer=None, scheduler=None, evaluation=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluation)
        self.save_hyperparameters(ignore=["model", "tokenizer"])
        self.filter_groups = filter_groups
        online.configure(self, prompts_per_minibatch, normalizer, grad_clip, generation, truncated_is_wrong,
                         max_generation_batches, seed)

    def training_step(self, batch, batch_idx):
        rollout = online.rollout(self, batch, batch_idx)
        k = rollout.num_samples
        if self.filter_groups:
            kept = mixed_prompts(rollout)
        else:  # prompts with at least one correct answer
            kept = torch.nonzero(rollout.grouped(rollout.rewards).amax(-1) > 0).flatten()
        normalizer = self.normalizer or self.prompts_per_minibatch * k

        def loss_of(logp, rows, index):
            return rft_loss(logp, rows["rewards"], rows["mask"], normalizer=normalizer)

        online.train_on_prompts(self, rollout, kept, loss_of)

    def schedule_period(self) -> int:
        return int(self.trainer.estimated_stepping_batches) * online.updates_per_batch(self, self.prompts_per_minibatch)
