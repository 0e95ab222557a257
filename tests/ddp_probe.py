"""Instruments for multi-process runs (`train.py ... trainer=ddp|fsdp`): a reward that starves one process of groups
and a callback that writes a checksum of the trainable parameters before every optimizer step and after every
training batch, one file per process (both named from the command line by `_target_`), and the launcher of such
runs."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch.distributed as dist
from lightning.pytorch import Callback
from torch.distributed.tensor import DTensor

from tests.helpers import ROOT, CoinFlipVerifier

TIMEOUT = 420  # seconds: a hang (asymmetric collectives) fails the test instead of blocking the suite
TINY_MODEL = ["model.hidden_size=32", "model.num_heads=2", "model.num_layers=1", "model.intermediate_size=64"]

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
    step and after each training batch (and at the start of each fit), with the global step, so processes can be
    compared step by step."""

    def __init__(self, directory: str):
        self.directory = directory

    def write(self, trainer, module, event: str) -> None:
        digest = hashlib.sha256()
        for param in module.trainable_parameters():
            if isinstance(param, DTensor):  # FSDP: the whole parameter (a collective, made by every process)
                param = param.full_tensor()
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


def run_two_processes(overrides: list[str], tmp_path, trainer: str = "ddp") -> subprocess.CompletedProcess:
    """`python train.py <overrides>` with two CPU processes (gloo) of `trainer` (ddp or fsdp), writing in `tmp_path`,
    a checksum file per process in `tmp_path`/sums; a run that does not end within TIMEOUT fails the test."""
    command = [sys.executable, "train.py", *overrides, f"trainer={trainer}", "trainer.accelerator=cpu",
               "trainer.devices=2", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache",
               "~callbacks.progress_bar", "logger=none",
               f"+callbacks.checksums={{_target_: tests.ddp_probe.ParameterChecksums, directory: {tmp_path}/sums}}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own session, so a hang's timeout ends the launcher and the process it started for rank 1 together
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"no result within {TIMEOUT} s (a hang?):\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def main_stage_records(path) -> list[dict]:
    """The records of the last fit (the main stage; a reward model's fit comes before it)."""
    with open(path) as handle:
        records = [json.loads(line) for line in handle]
    starts = [i for i, r in enumerate(records) if r["event"] == "fit_start"]
    return records[starts[-1]:]


def assert_processes_in_step(tmp_path, padded: bool) -> None:
    """Both processes' checksum records of the main stage's fit (two rollout steps): the same events at the same
    global steps, at least two optimizer steps, bit-identical parameters at every record, parameters that changed in
    each rollout step, and, with `padded`, padded updates in the first one (process 1 kept no group there)."""
    ranks = [main_stage_records(tmp_path / "sums" / f"rank{r}.jsonl") for r in (0, 1)]
    assert [(r["event"], r["step"]) for r in ranks[0]] == [(r["event"], r["step"]) for r in ranks[1]]
    steps = [r for r in ranks[0] if r["event"] == "before_step"]
    batches = [r for r in ranks[0] if r["event"] == "batch_end"]
    assert len(batches) == 2 and len(steps) == batches[-1]["step"] >= 2
    for zero, one in zip(*ranks):
        assert zero["hash"] == one["hash"], f"parameters differ across processes at {zero['event']} {zero['step']}"
    assert len({r["hash"] for r in batches}) == 2, "every rollout step changed the parameters"
    if padded:
        assert batches[0]["padded_updates"] > 0
