"""Supervised fine-tuning: the baseline every method compares against."""
from __future__ import annotations

from lightning_modules.base import PostTrainModule
from posttrain.losses.sft import sft_loss
from posttrain.models.forward import label_logprobs


class SFTModule(PostTrainModule):
    shardable = True  # one forward and backward per batch on every process
    def __init__(self, model, tokenizer, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.save_hyperparameters(ignore=["model", "tokenizer", "evaluator"])

    def training_step(self, batch, batch_idx):
        logps, mask = label_logprobs(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     image_inputs=batch.get("image_inputs"))  # (B, T-1)
        loss, metrics = sft_loss(logps, mask)
        self.log_metrics("train", {"loss": loss, "nll": metrics["nll"]}, batch_size=batch["input_ids"].shape[0])
        return loss
