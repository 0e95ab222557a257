"""benchmarks/bench_trl.py runs both frameworks on the same work and prints its table."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_bench_trl_runs_both_frameworks_on_the_same_work(tmp_path):
    out = tmp_path / "bench_trl.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_trl.py"), "--prompts", "32",
                           "--batch", "16", "--group", "2", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["run"] for r in rows] == ["posttrain SPIN", "TRL DPOTrainer", "posttrain GRPO", "TRL GRPOTrainer",
                                        "posttrain DistillSpec", "TRL GKDTrainer"]
    for ours, theirs in (rows[0:2], rows[2:4], rows[4:6]):
        assert ours["steps"] == theirs["steps"] == 2  # 32 prompts in batches of 16
        assert ours["sequences"] == theirs["sequences"]
        # the same prompts and answer lengths: the token counts differ only by what each samples
        assert 0.5 < ours["tokens"] / theirs["tokens"] < 2
        assert ours["peak_bytes"] > 0 and ours["seconds"] > 0
    assert "TRL GKDTrainer" in proc.stdout and "tokens/s" in proc.stdout
