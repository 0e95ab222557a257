"""Instruments for multi-process runs (`train.py ... trainer=ddp`), named from the command line by `_target_`:
a reward that starves one process of groups, and a callback that writes a checksum of the trainable parameters
before every optimizer step and after every training batch, one file per process."""
from __future__ import annotations

import hashlib
import json
import os

import torch.distributed as dist
from lightning.pytorch import Callback

from tests.helpers import CoinFlipVerifier

TRAINING = {"batch": None}  # the training batch in progress in this process (None outside training batches)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class StarvedRankReward(CoinFlipVerifier):
    """The coin flip (mixed groups), except on process 1 during its first training batch of each epoch, where every
    answer is right: that process keeps no group there, while process 0 keeps some."""

    def __call__(self, example: dict, completion: str):
        from posttrain.rewards import Verdict

        if rank() == 1 and TRAINING["batch"] == 0:
            return Verdict(correct=True, parsed=True)
        return super().__call__(example, completion)


class ParameterChecksums(Callback):
    """Appends to `<directory>/rank<r>.jsonl` a sha256 of every trainable parameter's bytes before each optimizer
    step and after each training batch (and at the start of each fit), with the global step, so processes can be compared step by step."""

    def __init__(self, directory: str):
        self.directory = directory

    def write(self, trainer, module, event: str) -> None:
        digest = hashlib.sha256()
        for param in module.trainable_parameters():
            digest.update(param.detach().float().cpu().numpy().tobytes())
        os.makedirs(self.directory, exist_ok=True)
        padded = trainer.callback_metrics.get("train/padded_updates")
        record = {"event": event, "step": trainer.global_step, "hash": digest.hexdigest(),
                  "padded_updates": None if padded is None else float(padded)}
        with open(os.path.join(self.directory, f"rank{trainer.global_rank}.jsonl"), "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_fit_start(self, trainer, module):
        self.write(trainer, module, "fit_start")  # each stage's fit (e.g. a reward model's, then the main one's)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        TRAINING["batch"] = batch_idx

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.write(trainer, module, "before_step")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        TRAINING["batch"] = None
        self.write(trainer, module, "batch_end")
