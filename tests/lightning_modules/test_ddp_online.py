"""Online methods with two processes on CPU (gloo) through Lightning's DDP strategy.

Process 1 keeps no group in its first batch of the epoch (`tests.ddp_probe.StarvedRankReward`) while process 0 keeps
several, so the processes would make different numbers of backward calls (each a gradient all-reduce) unless they
agree on one; the run must finish, both processes must make the same optimizer steps, and their parameters must be
bit-identical before every step and after every batch (`tests.ddp_probe.ParameterChecksums`).
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT

TIMEOUT = 420  # seconds: a hang (asymmetric collectives) fails the test instead of blocking the suite
TINY_MODEL = ["model.hidden_size=32", "model.num_heads=2", "model.num_layers=1", "model.intermediate_size=64"]
# 16 prompts over 2 processes in batches of 4: two rollout steps per process, one group per mini-batch
ONLINE = ["debug=tiny", "stages.warmup=null", "data.train_size=16", "trainer.max_epochs=1", "method.num_samples=4",
          "method.prompts_per_minibatch=1", "method.truncated_is_wrong=false", "method.evaluator.sampled_k=0",
          "reward._target_=tests.ddp_probe.StarvedRankReward"]
RUNS = {
    "grpo": ["experiment=grpo", *ONLINE, "method.max_generation_batches=2"],  # the refill draws per process
    "nft": ["experiment=nft", *ONLINE, "method.max_generation_batches=1"],
    "rft": ["experiment=rft", *ONLINE, "method.max_generation_batches=1"],
    "spark": ["experiment=spark", *ONLINE, "stages.control=null", "method.reward_batch_size=2",
              "method.filter_groups=true"],
    "pairwise_rl": ["experiment=pairwise_rl", "debug=tiny", "stages.warmup=null", "data.train_size=16",
                    "trainer.max_epochs=1", "method.ppo.num_samples=2", "method.ppo.minibatch_size=4",
                    "method.evaluator.sampled_k=0", "stages.reward_model.trainer.max_epochs=1",
                    "stages.reward_model.data.train_size=8", "stages.reward_model.data.eval_size=8"],
}


def run_two_processes(overrides: list[str], tmp_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "train.py", *overrides, *TINY_MODEL, "trainer=ddp", "trainer.accelerator=cpu",
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


@pytest.mark.parametrize("experiment", sorted(RUNS))
def test_online_method_keeps_processes_in_step(experiment, tmp_path):
    proc = run_two_processes(RUNS[experiment], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    ranks = [main_stage_records(tmp_path / "sums" / f"rank{r}.jsonl") for r in (0, 1)]
    assert [(r["event"], r["step"]) for r in ranks[0]] == [(r["event"], r["step"]) for r in ranks[1]]
    steps = [r for r in ranks[0] if r["event"] == "before_step"]
    batches = [r for r in ranks[0] if r["event"] == "batch_end"]
    assert len(batches) == 2 and len(steps) == batches[-1]["step"] >= 2
    for zero, one in zip(*ranks):
        assert zero["hash"] == one["hash"], f"parameters differ across processes at {zero['event']} {zero['step']}"
    assert len({r["hash"] for r in batches}) == 2, "every rollout step changed the parameters"
    if experiment != "pairwise_rl":  # process 1 kept nothing in batch 0: it padded every update of that batch
        assert batches[0]["padded_updates"] > 0
    with open(tmp_path / "results.json") as handle:
        assert json.load(handle)["rows"]
