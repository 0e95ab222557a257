"""eval.py: a saved model directory or a Lightning checkpoint evaluated without training, by the stage's method."""
import json
import os
import subprocess
import sys

import pytest
import torch

from posttrain.pipeline import evaluate, train
from posttrain.utils.config import ConfigError
from tests.helpers import ROOT, compose_config

SFT = ["debug=tiny", "trainer.max_epochs=1"]


def metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if "/" in k}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step SFT run that saved its model directory and checkpoints."""
    out = tmp_path_factory.mktemp("trained")
    result = train(compose_config([*SFT, f"stages.main.save_dir={out}/model"], out))
    return out, result["rows"][-1]


def test_a_saved_model_directory_scores_as_at_the_end_of_training(trained, tmp_path):
    out, last = trained
    cfg = compose_config([*SFT, "model=hf", f"model.name_or_path={out}/model"], tmp_path, config_name="eval")
    result = evaluate(cfg)
    assert result["trainer"].global_step == 0  # nothing trained
    assert result["rows"][0]["run"] == "test (evaluated)"  # the stage name (the run name here)
    assert metrics(result["rows"][0]) == pytest.approx(metrics(last), abs=1e-5)
    with open(tmp_path / "results.json") as handle:
        written = json.load(handle)
    assert written["rows"] == result["rows"]
    assert written["machine"]["libraries"]["torch"] == torch.__version__  # what the figures were measured with


def test_a_checkpoint_scores_as_at_the_end_of_training(trained, tmp_path):
    out, last = trained
    ckpt = out / "checkpoints" / "main" / "last.ckpt"
    result = evaluate(compose_config([*SFT, f"ckpt_path={ckpt}"], tmp_path, config_name="eval"))
    assert result["rows"][0]["step"] == 2 and metrics(result["rows"][0]) == pytest.approx(metrics(last), abs=1e-5)
    fresh = evaluate(compose_config(SFT, tmp_path / "fresh", config_name="eval"))  # the untrained model differs
    assert metrics(fresh["rows"][0]) != pytest.approx(metrics(last), abs=1e-5)


def test_a_reward_model_directory_is_evaluated_with_its_value_head(tmp_path):
    overrides = ["experiment=bt_rm", "debug=tiny", "stages.warmup=null", "trainer.max_epochs=1"]
    trained = train(compose_config([*overrides, f"stages.main.save_dir={tmp_path}/rm"], tmp_path / "train"))
    cfg = compose_config([*overrides, f"model.name_or_path={tmp_path}/rm"], tmp_path / "eval", config_name="eval")
    row = evaluate(cfg)["rows"][0]
    assert "val/pair_accuracy" in row
    assert metrics(row) == pytest.approx(metrics(trained["rows"][-1]), abs=1e-5)


def test_a_missing_checkpoint_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^ckpt_path: "):
        evaluate(compose_config([*SFT, f"ckpt_path={tmp_path}/none.ckpt"], tmp_path, config_name="eval"))


def test_eval_py_prints_the_table(trained, tmp_path):
    out, _ = trained
    command = [sys.executable, "eval.py", *SFT, f"ckpt_path={out}/checkpoints/main/last.ckpt",
               f"hydra.run.dir={tmp_path}", "~callbacks.progress_bar"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(evaluated)" in proc.stdout and (tmp_path / "results.json").is_file()


DPO = ["experiment=dpo", "debug=tiny", "stages.warmup.trainer.max_epochs=1", "stages.warmup.data.train_size=8",
       "stages.warmup.data.eval_size=8", "stages.warmup.data.batch_size=4", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    """Two DPO steps from a cached SFT warm-up (saved as a directory too), with their checkpoints."""
    out = tmp_path_factory.mktemp("dpo")
    result = train(compose_config([*DPO, f"+stages.warmup.save_dir={out}/warmup"], out))
    return out, result


def test_a_cached_stage_is_evaluated_on_every_held_out_batch_of_its_evaluate_on(dpo_run, tmp_path):
    # the warm-up fits with limit_val_batches: 0 (conf/stage/cached.yaml); its row is one evaluation on evaluate_on
    out, result = dpo_run
    overrides = [*DPO, "eval_stage=warmup", f"model.name_or_path={out}/warmup", f"paths.cache_dir={out}/cache"]
    row = evaluate(compose_config(overrides, tmp_path, config_name="eval"))["rows"][0]
    warmup = result["stages"]["warmup"]
    last = warmup.rows[-1]
    assert row["run"] == f"{warmup.planned.stage.name} (evaluated)" and "val/accuracy" in row
    assert metrics(row) == pytest.approx(metrics(last), abs=1e-5)


def test_a_dpo_checkpoint_is_scored_against_the_reference_of_its_start(dpo_run, tmp_path):
    # π_ref is rebuilt from the start (the cached warm-up), not from the evaluated weights or a fresh model
    out, result = dpo_run
    ckpt = out / "checkpoints" / "main" / "last.ckpt"
    overrides = [*DPO, f"ckpt_path={ckpt}", f"paths.cache_dir={out}/cache"]
    evaluated = evaluate(compose_config(overrides, tmp_path, config_name="eval"))
    row, last = evaluated["rows"][0], result["rows"][-1]
    assert evaluated["trainer"].global_step == 0 and row["step"] == 2
    assert last["val/rewards/margins"] != 0  # the policy moved away from its reference
    for name in ("val/rewards/margins", "val/pair_accuracy"):
        assert row[name] == pytest.approx(last[name], abs=1e-5), name
