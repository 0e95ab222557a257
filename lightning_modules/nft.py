"""NFT: Negative-aware Fine-Tuning (Chen et al., arXiv 2505.18116, ICLR 2026).

Each training batch of prompts is one rollout step: the current model (π_old for the step) samples K answers per
prompt, recording their per-token log-probs; the reward scores them; r̂_q is each prompt's mean reward; prompts
with r̂_q ∈ {0, 1} are dropped (the paper's dynamic sampling, without resampling); the rest are split into
mini-batches of whole groups, each one optimizer step on the NFT loss. Only the first mini-batch is strictly
on-policy; later ones use the recorded log-probs as π_old, which is where the clip matters.
"""
from __future__ import annotations

from lightning_modules import online
from lightning_modules.base import PostTrainModule
from posttrain.losses.nft import OMEGAS, nft_loss
from posttrain.models import sharding
from posttrain.rollouts import correctness_rate, mixed_prompts, rollout
from posttrain.utils.config import check, check_choice


class NFTModule(PostTrainModule):
    """Args:
        reward: `reward(example, completion) -> Verdict` scoring the rollouts (`conf/reward/`).
        num_samples: K, answers sampled per prompt (the group of the group statistics), >= 2.
        eps: ε, the value clip of the negative branch (paper default 1.0), > 0.
        omega: ω(q): "1-r" (paper default), "grpo" (sqrt((1 − r̂)/r̂)) or "1".
        neg_weight: weight of the negative term (1 = NFT).
        r_clamp: [low, high] clamp of r̂ (paper [0.02, 0.98]).
        prompts_per_minibatch: questions per optimizer step (each brings its K answers).
        normalizer: C, the constant dividing the token sum; null = prompts_per_minibatch * num_samples.
        grad_clip: gradient-norm clip per optimizer step (paper 1.0); null disables it.
        generation: {temperature, max_new_tokens} of the rollouts.
        truncated_is_wrong: answers without eos within max_new_tokens score 0 (paper).
        max_generation_batches: dynamic sampling; at most this many prompt batches are generated per step to fill
            the batch with mixed groups (paper: 10); 1 = train on the mixed groups of the step's batch only.
        seed: seeds the rollouts by position in training (a resumed run draws the same samples).
    """

    record_start_evaluation = True  # the start model's row, with the same evaluation (incl. sampled accuracy)
    shardable = True  # the policy's training forwards are padded to the same count on every process

    def __init__(self, model, tokenizer, reward, num_samples: int = 8, eps: float = 1.0, omega: str = "1-r",
                 neg_weight: float = 1.0, r_clamp=(0.02, 0.98), prompts_per_minibatch: int = 16,
                 normalizer: float | None = None, grad_clip: float | None = 1.0, generation: dict | None = None,
                 truncated_is_wrong: bool = True, max_generation_batches: int = 1, seed: int = 0, optimizer=None,
                 scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(eps > 0, "method.eps", f"must be > 0, got {eps}")
        check_choice(omega, OMEGAS, "method.omega")
        check(neg_weight >= 0, "method.neg_weight", f"must be >= 0, got {neg_weight}")
        check(len(r_clamp) == 2 and 0 < r_clamp[0] <= r_clamp[1] < 1, "method.r_clamp",
              f"must be [low, high] with 0 < low <= high < 1, got {list(r_clamp)}")
        self.save_hyperparameters(ignore=["model", "tokenizer", "reward", "evaluator"])
        self.reward = reward
        self.eps, self.omega, self.neg_weight, self.r_clamp = eps, omega, neg_weight, tuple(r_clamp)
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
        r_hat = correctness_rate(samples.grouped(samples.rewards)).repeat_interleave(samples.num_samples)  # (R,)
        kept = mixed_prompts(samples)  # (P',) prompts with 0 < r̂ < 1

        def loss_of(logp, rows, index):
            return nft_loss(logp, rows["old_logps"], rows["rewards"], r_hat[index], rows["mask"], eps=self.eps,
                            omega=self.omega, neg_weight=self.neg_weight, r_clamp=self.r_clamp,
                            normalizer=self.settings.loss_normalizer)

        online.train_on_prompts(self, samples, kept, loss_of, self.settings)

    def schedule_period(self) -> int:
        return online.schedule_period(self.trainer, self.settings)
