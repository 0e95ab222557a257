"""A SPIN run killed inside an iteration resumes from last.ckpt and ends exactly where an uninterrupted run ends."""
import os

import pytest
import torch

from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config

# 2 iterations x 2 epochs x 2 steps; the kill lands in iteration 2 after its first epoch's checkpoint, so the resumed
# run must reuse the checkpointed opponent and synthetic data rather than regenerate them.
BASE = ["experiment=spin", "debug=tiny", "stages.warmup=null", "stages.control=null", "method.num_iterations=2",
        "method.epochs_per_iteration=2", "model.hidden_size=32", "model.num_heads=2", "model.num_layers=1",
        "model.intermediate_size=64", "method.optimizer.lr=1e-3"]


def test_killed_spin_run_resumes_to_the_same_result(tmp_path):
    reference = train(compose_config(BASE, tmp_path / "uninterrupted"))

    killed_cfg = compose_config([*BASE, "+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=7"],
                                tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 6 and state["posttrain"]["iteration"] == 1  # inside the second iteration

    resumed = train(compose_config([*BASE, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["trainer"].global_step == reference["trainer"].global_step == 8
    assert_same_parameters(resumed["module"].model, reference["module"].model)
    assert resumed["module"].eval_history == reference["module"].eval_history
    assert os.path.isfile(tmp_path / "killed" / "results.json")
