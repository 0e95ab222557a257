"""DPO: Direct Preference Optimization (Rafailov et al., NeurIPS 2023) on offline preference pairs.

π_ref is a frozen copy of the model the method starts from (the warm-up's SFT model in the default experiment):
outside the optimizer and gradient sync, and left out of checkpoints, since a resumed run rebuilds it from the same
start. Each step runs the policy once (and π_ref once, without gradient) over the batch's chosen and rejected rows
stacked into one batch.

Held-out pairs are judged by the implicit reward r(x, y) = β log π_θ(y|x)/π_ref(y|x), with P(y_w ≻ y_l) =
σ(r_w − r_l) scored by the reward models' pair metrics (`lightning_modules/pair_eval.py`), beside the mean implicit
rewards and margins and how often the policy itself gives the chosen response the higher likelihood. Where the
held-out pairs carry an `answer` and the method has a verifier, the policy's greedy answers to their prompts are
scored too (`<split>/accuracy`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lightning_modules import pair_eval
from lightning_modules.base import PostTrainModule, frozen_copy
from posttrain.evaluators import GenerationEvaluator
from posttrain.losses.dpo import LOSS_TYPES, dpo_loss, log_ratio
from posttrain.metrics import ExactMatch
from posttrain.models.forward import IGNORE_INDEX, sequence_logprobs
from posttrain.processors import left_pad
from posttrain.utils.config import check, check_choice

# per-split means logged at each evaluation, beside pair_eval's metrics
EVAL_MEANS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/accuracies")


def stack_pairs(batch: dict, pad_id: int) -> dict:
    """The chosen rows, then the rejected rows, of a pair batch as one right-padded batch: (2B, T) each."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    return {key: torch.cat([F.pad(batch[f"{side}_{key}"], (0, width - batch[f"{side}_{key}"].shape[1]), value=value)
                            for side in ("chosen", "rejected")])  # (2B, T)
            for key, value in fill.items()}


class DPOModule(PostTrainModule):
    """Args:
        beta: β > 0 of the loss; also the scale of the implicit rewards.
        loss_type: "sigmoid" (DPO), "ipo" (on token-averaged log-ratios) or "hinge" (`posttrain.losses.dpo`).
        label_smoothing: ε in [0, 0.5) of conservative DPO; sigmoid only.
        reference_free: no π_ref (its log-probs taken as 0), as TRL's `reference_free`: the loss then compares the
            policy's own likelihoods of the two responses.
        evaluator: a `GenerationEvaluator` whose `reward(example, completion) -> Verdict` (e.g. `${reward}`) also
            scores the policy's greedy answers to the prompts of held-out pairs that carry an `answer`; without a
            reward only the pair metrics are reported.
    """

    record_start_evaluation = True
    shardable = True  # one policy forward (chosen and rejected) per batch on every process

    def __init__(self, model, tokenizer, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                 reference_free: bool = False, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator or GenerationEvaluator())
        check(beta > 0, "method.beta", f"must be > 0, got {beta}")
        check_choice(loss_type, LOSS_TYPES, "method.loss_type")
        check(0 <= label_smoothing < 0.5, "method.label_smoothing", f"must be in [0, 0.5), got {label_smoothing}")
        check(label_smoothing == 0 or loss_type == "sigmoid", "method.label_smoothing",
              f"applies to loss_type=sigmoid only, got loss_type={loss_type}")
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.reference = None
        if not reference_free:  # π_ref is the start model: a resumed run rebuilds it
            self.add_frozen("reference", frozen_copy(model), rebuildable=True)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def pair_logps(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Σ_t log π_θ, Σ_t log π_ref and the response token count of the chosen rows then the rejected rows:
        (2B,) each."""
        rows = stack_pairs(batch, self.pad_id)
        policy = sequence_logprobs(self.model, rows)  # (2B,)
        if self.reference is None:
            reference = torch.zeros_like(policy)  # (2B,)
        else:
            with torch.no_grad():
                reference = sequence_logprobs(self.reference, rows)  # (2B,)
        lengths = (rows["labels"][:, 1:] != IGNORE_INDEX).sum(-1)  # (2B,)
        return policy, reference, lengths

    def training_step(self, batch, batch_idx):
        policy, reference, lengths = self.pair_logps(batch)
        pairs = policy.shape[0] // 2
        loss, metrics = dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:],
                                 beta=self.beta, loss_type=self.loss_type, label_smoothing=self.label_smoothing,
                                 chosen_lengths=lengths[:pairs], rejected_lengths=lengths[pairs:])
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=pairs)
        return loss

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        pair_eval.setup(self)
        if self.evaluator.reward is not None:
            self.evaluator.setup((), self.tokenizer)
        if not hasattr(self, "eval_means"):
            self.eval_means, self.eval_greedy = nn.ModuleDict(), nn.ModuleDict()
        for split in getattr(self.trainer.datamodule, "eval_splits", ()):
            if split not in self.eval_means:
                self.eval_means[split] = nn.ModuleDict({name: MeanMetric() for name in EVAL_MEANS})
                self.eval_greedy[split] = ExactMatch()

    @torch.no_grad()
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = pair_eval.split_of(self, dataloader_idx)
        policy, reference, lengths = self.pair_logps(batch)
        averaged = lengths if self.loss_type == "ipo" else None  # the rewards the loss trains
        rewards = self.beta * log_ratio(policy, reference, averaged)  # (2B,)
        chosen, rejected = rewards.chunk(2)  # (B,) each
        pair_eval.record(self, split, torch.sigmoid(chosen - rejected), torch.sigmoid(rejected - chosen))
        means = self.eval_means[split]
        means["rewards/chosen"].update(chosen)
        means["rewards/rejected"].update(rejected)
        means["rewards/margins"].update(chosen - rejected)
        policy_chosen, policy_rejected = policy.chunk(2)  # (B,) each
        means["logps/accuracies"].update((policy_chosen > policy_rejected).float())
        examples = batch["examples"]
        if self.evaluator.reward is not None and all("answer" in e for e in examples):
            completions = self.evaluator.greedy_completions(self.model, self.prompts(batch))
            self.eval_greedy[split].update(self.evaluator.correct(examples, completions))

    def prompts(self, batch: dict) -> dict:
        """The pairs' prompt tokens (those of the chosen rows), left-padded for generation: (B, P) each."""
        rows = zip(batch["chosen_input_ids"].tolist(), batch["chosen_prompt_lengths"].tolist())
        padded = left_pad([ids[:length] for ids, length in rows], self.pad_id)
        return {key: value.to(self.device) for key, value in padded.items()}

    def on_validation_epoch_end(self) -> None:
        extra = {}
        for split, means in self.eval_means.items():
            for name, metric in means.items():
                if metric.update_called:
                    extra[f"{split}/{name}"] = metric.compute()  # reduced over processes by torchmetrics
                    metric.reset()
            if self.eval_greedy[split].update_called:
                extra[f"{split}/accuracy"] = self.eval_greedy[split].compute()
                self.eval_greedy[split].reset()
        pair_eval.finish(self, extra)
