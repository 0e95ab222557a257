"""Bradley–Terry scalar reward model: the baseline Pairwise-RL is compared with (spec §2.4).

`module.model` is a `ValueModel` (a scalar head on the causal LM's last hidden state); the reward of a response is
the value at its last token (eos), r(q, y) = `module.model.score(ids, mask)` on `[bos] q y [eos]`. The backbone's
lm-head is unused and frozen, and so is the head's bias (a shift of r that BT cannot see). Held-out pairs are
scored with P(A ≻ B) = σ(r_A − r_B) and the same metrics as the generative judge (`lightning_modules/pair_eval.py`);
the scalar RM has no position bias by construction.
"""
from __future__ import annotations

import torch

from lightning_modules import pair_eval
from lightning_modules.base import PostTrainModule
from posttrain.losses.bt_rm import bt_rm_loss
from posttrain.metrics import kendall_tau_within_and_across
from posttrain.models.value_head import ValueModel, freeze_unused_lm_head


class BTRMModule(PostTrainModule):
    record_start_evaluation = True

    def __init__(self, model, tokenizer, optimizer=None, scheduler=None, evaluator=None):
        freeze_unused_lm_head(model)  # the value head reads the hidden states; untied lm-head weights stay as loaded
        super().__init__(ValueModel(model), tokenizer, optimizer, scheduler, evaluator)
        self.model.head.bias.requires_grad_(False)  # L_BT sees only differences r_w − r_l: the bias gets no gradient
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])

    def rewards(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.model.score(batch["chosen_input_ids"], batch["chosen_attention_mask"])  # (B,)
        rejected = self.model.score(batch["rejected_input_ids"], batch["rejected_attention_mask"])  # (B,)
        return chosen, rejected

    def training_step(self, batch, batch_idx):
        loss, metrics = bt_rm_loss(*self.rewards(batch))
        self.log_metrics("train", {"loss": loss, **metrics}, batch_size=batch["chosen_input_ids"].shape[0])
        return loss

    # ---- evaluation: the generative judge's metrics from P(A ≻ B) = σ(r_A − r_B) -------------------------------
    def setup(self, stage: str) -> None:
        pair_eval.setup(self)
        self.gold: dict[str, list] = {}  # split -> [(rewards (B, 2), gold scores (B, 2), prompts)] of this validation

    @torch.no_grad()
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = pair_eval.split_of(self, dataloader_idx)
        chosen, rejected = self.rewards(batch)  # (B,) each
        pair_eval.record(self, split, torch.sigmoid(chosen - rejected), torch.sigmoid(rejected - chosen))
        examples = batch["examples"]
        if examples and "chosen_score" in examples[0]:
            scores = torch.tensor([[e["chosen_score"], e["rejected_score"]] for e in examples])  # (B, 2)
            rewards = torch.stack([chosen, rejected], -1).cpu()  # (B, 2)
            self.gold.setdefault(split, []).append((rewards, scores, [e["prompt"] for e in examples]))

    def on_validation_epoch_end(self) -> None:
        extra = {}  # this process's pairs only: a diagnostic, not reduced across processes
        for split, parts in self.gold.items():
            rewards = torch.cat([p[0] for p in parts]).flatten()  # (2N,) chosen, rejected of each pair
            scores = torch.cat([p[1] for p in parts]).flatten()  # (2N,)
            prompts = [q for p in parts for q in p[2] for _ in range(2)]
            ids = {q: i for i, q in enumerate(dict.fromkeys(prompts))}
            within, across = kendall_tau_within_and_across(rewards, scores, torch.tensor([ids[q] for q in prompts]))
            extra[f"{split}/reward_tau_within"], extra[f"{split}/reward_tau_across"] = within, across
        self.gold = {}
        pair_eval.finish(self, extra)
