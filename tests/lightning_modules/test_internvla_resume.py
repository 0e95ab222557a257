"""experiment=internvla_m1's full-method stage killed mid-run resumes from last.ckpt to the same end: the same
weights (planner, querying transformer, DiT) and the same rows; the cached demonstrations and stage 1 are reused."""
import pytest
import torch

from posttrain.pipeline import train
from tests.helpers import Killed, assert_same_parameters, compose_config
from tests.test_configs import STAGES

# the main arm only, 2 epochs x 2 co-training steps, scored in closed loop after each epoch
BASE = ["experiment=internvla_m1", "debug=tiny", *STAGES["internvla_m1"], "stages.vanilla=null",
        "stages.plain_ft=null", "stages.cotrain_no_prompt=null", "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1"]


def test_killed_internvla_run_resumes_to_the_same_result(tmp_path):
    cache = [f"paths.cache_dir={tmp_path / 'cache'}"]
    reference = train(compose_config([*BASE, *cache], tmp_path / "uninterrupted"))
    assert reference["trainer"].global_step == 4

    killed_cfg = compose_config([*BASE, *cache, "+callbacks.kill._target_=tests.helpers.KillAtStep",
                                 "+callbacks.kill.step=3"], tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed_cfg)
    last = tmp_path / "killed" / "checkpoints" / "main" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2

    resumed = train(compose_config([*BASE, *cache, f"ckpt_path={last}"], tmp_path / "killed"))
    assert resumed["stages"]["grounding"].module is None  # stage 1 from the cache
    assert resumed["trainer"].global_step == 4
    assert_same_parameters(resumed["module"].model, reference["module"].model)
    without_timings = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]  # noqa: E731
    assert without_timings(resumed["rows"]) == without_timings(reference["rows"])  # wall-clock rates aside
    assert {"val/success", "grounding/box_iou50"} <= set(resumed["rows"][-1])
