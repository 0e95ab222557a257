"""`model.fused_lm_head=true` through whole experiments: every stage of each runs its two steps (the stages'
models, warm-ups and DistillSpec's teacher included, use the fused head)."""
import pytest

from posttrain.pipeline import train
from tests.helpers import compose_config
from tests.test_configs import STAGES

FUSED = {"grpo": [], "grpo_vlm": [], "spin": [], "otr": [],
         "distillspec": ["stages.teacher.model.fused_lm_head=true", "method.divergence=jsd"]}


@pytest.mark.parametrize("experiment", sorted(FUSED))
def test_experiment_runs_two_steps_with_the_fused_head(experiment, tmp_path):
    overrides = [f"experiment={experiment}", "debug=tiny", *STAGES[experiment], "model.fused_lm_head=true",
                 *FUSED[experiment]]
    cfg = compose_config(overrides, tmp_path)
    result = train(cfg)
    main = result["stages"]["main"]
    assert main.trainer.global_step == 2
    assert main.module.model.config.fused_lm_head
    if experiment == "distillspec":
        assert main.module.teacher.config.fused_lm_head
    assert result["module"].eval_history, "the run evaluated"
