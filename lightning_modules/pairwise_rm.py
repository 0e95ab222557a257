"""Pairwise generative reward model (Pairwise-RL, Xu et al., arXiv 2504.04950, the reward-model half).

The judge is the causal LM itself: it reads `ctx(q, y_A, y_B)` and its preference is the next-token distribution
restricted to the verdict tokens "A"/"B" (no scalar head). Training is cross-entropy on that one token, with every
pair in both orders, (y1, y2, z) and (y2, y1, 1 − z), so the judge cannot profit from a position bias. Held-out pairs
are judged in both orders (`lightning_modules/pair_eval.py`).

`module.model` is the judge LM: load it (or the saved directory) as the frozen judge of Pairwise PPO, with
`PairwiseJudge(model, TextProcessor(tokenizer), template, verdicts)` and the same template and verdicts.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from lightning_modules import pair_eval
from lightning_modules.base import PostTrainModule
from posttrain.losses.pairwise_rm import pairwise_rm_loss
from posttrain.processors import TextProcessor
from posttrain.rewards.judges import PAIRWISE_TEMPLATE, PAIRWISE_VERDICTS, PairwiseJudge


def judge_rows(examples: Sequence[dict], both_orders: bool = True, seed: int = 0):
    """Preference pairs -> judge rows (prompts, a, b, z), z = 1 when the response in slot A is the chosen one.

    both_orders: each pair twice, (chosen, rejected, 1) then (rejected, chosen, 0) (all first orders, then all
        second ones); otherwise once, in an order fixed per pair by (seed, its index), so the judge never sees a
        pair's other order.
    """
    if both_orders:
        prompts = [e["prompt"] for e in examples] * 2
        a = [e["chosen"] for e in examples] + [e["rejected"] for e in examples]
        b = [e["rejected"] for e in examples] + [e["chosen"] for e in examples]
        z = [1.0] * len(examples) + [0.0] * len(examples)
        return prompts, a, b, torch.tensor(z)
    prompts, a, b, z = [], [], [], []
    for e in examples:
        first = random.Random(f"{seed}/{e['index']}").random() < 0.5
        prompts.append(e["prompt"])
        a.append(e["chosen"] if first else e["rejected"])
        b.append(e["rejected"] if first else e["chosen"])
        z.append(1.0 if first else 0.0)
    return prompts, a, b, torch.tensor(z)


class PairwiseRMModule(PostTrainModule):
    """Args:
        template: judge text with {prompt}, {a}, {b} (default "{prompt}|A:{a}|B:{b}|>").
        verdicts: the single tokens meaning "A is better" and "B is better".
        swap_augmentation: train on both orders of every pair (the paper's position-bias augmentation); false is
            the ablation that trains each pair in one (per-pair random) order.
        seed: fixes the single orders of the ablation.
    """

    record_start_evaluation = True

    def __init__(self, model, tokenizer, template: str = PAIRWISE_TEMPLATE,
                 verdicts: Sequence[str] = PAIRWISE_VERDICTS, swap_augmentation: bool = True, seed: int = 0,
                 optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])
        self.judge = PairwiseJudge(model, TextProcessor(tokenizer), template, verdicts)
        self.swap_augmentation, self.seed = swap_augmentation, seed

    def training_step(self, batch, batch_idx):
        prompts, a, b, z = judge_rows(batch["examples"], both_orders=self.swap_augmentation, seed=self.seed)
        logps = self.judge.logprobs(prompts, a, b)  # (R, 2), R = 2B with both orders
        loss, metrics = pairwise_rm_loss(logps, z.to(logps.device))
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=len(prompts))
        return loss

    # ---- evaluation: pair accuracy and calibration in both orders ----------------------------------------------
    def setup(self, stage: str) -> None:
        pair_eval.setup(self)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        examples = batch["examples"]
        prompts, a, b, _ = judge_rows(examples, both_orders=True)
        p_a = self.judge.probability(prompts, a, b)  # (2B,) P(A ≻ B): chosen in slot A, then rejected in slot A
        n = len(examples)
        pair_eval.record(self, pair_eval.split_of(self, dataloader_idx), p_a[:n], p_a[n:])

    def on_validation_epoch_end(self) -> None:
        pair_eval.finish(self)
