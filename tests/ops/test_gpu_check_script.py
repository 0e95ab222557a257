"""benchmarks/gpu_check.sh on a machine without a GPU: it says so, stops, and still writes its summary."""
import json
import os
import subprocess
import tarfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_stops_with_exit_2_and_a_summary_without_a_gpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_STEPS="gpu build tests", SITE=str(tmp_path / "site"))
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "NO GPU CHECK POSSIBLE" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["gpu"]  # nothing after the failed GPU step ran
    assert not summary["passed"] and summary["steps"][0]["verdict"].startswith("FAIL")
    assert sorted(os.listdir(tmp_path)) == ["logs.tar.gz", "summary.json", "summary.txt"]  # logs/ packed under $OUT
    with tarfile.open(tmp_path / "logs.tar.gz") as packed:
        assert "logs/gpu.log" in packed.getnames()
