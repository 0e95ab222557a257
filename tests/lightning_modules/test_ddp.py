"""SPIN with two processes on CPU (gloo) through Lightning's DDP strategy."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_spin_runs_with_two_cpu_processes(tmp_path):
    command = [sys.executable, "train.py", "experiment=spin", "debug=tiny", "stages.warmup=null", "stages.control=null",
               "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "method.num_iterations=2",
               "method.epochs_per_iteration=1", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache",
               "~callbacks.progress_bar"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    with open(tmp_path / "results.json") as handle:
        rows = json.load(handle)["rows"]
    # 8 prompts split over 2 processes in batches of 4: one step per epoch, one epoch per iteration.
    assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["step"] == 2
    assert (tmp_path / "checkpoints" / "main" / "last.ckpt").is_file()
