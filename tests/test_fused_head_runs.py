"""`model.fused_lm_head=true` through whole experiments: every stage of each runs its two steps (the stages'
models, warm-ups and DistillSpec's teacher included, use the fused head)."""
import pytest

from posttrain.pipeline import train
from tests.ddp_probe import run_two_processes
from tests.helpers import compose_config
from tests.lightning_modules.test_fsdp import GRPO, assert_same_weights, saved_weights
from tests.test_configs import BF16, BF16_STAGE_MODELS, STAGES

# run name -> (experiment, extra overrides)
FUSED = {"grpo": ("grpo", []), "grpo_vlm": ("grpo_vlm", []), "spin": ("spin", []), "otr": ("otr", []),
         "distillspec": ("distillspec", ["stages.teacher.model.fused_lm_head=true", "method.divergence=jsd"]),
         "grpo_bf16": ("grpo", BF16), "distillspec_bf16": ("distillspec", [*BF16, *BF16_STAGE_MODELS["distillspec"],
                                                                          "stages.teacher.model.fused_lm_head=true"])}


@pytest.mark.parametrize("run", sorted(FUSED))
def test_experiment_runs_two_steps_with_the_fused_head(run, tmp_path):
    experiment, extra = FUSED[run]
    overrides = [f"experiment={experiment}", "debug=tiny", *STAGES[experiment], "model.fused_lm_head=true", *extra]
    cfg = compose_config(overrides, tmp_path)
    result = train(cfg)
    main = result["stages"]["main"]
    assert main.trainer.global_step == 2
    assert main.module.model.config.fused_lm_head
    if experiment == "distillspec":
        assert main.module.teacher.config.fused_lm_head
    assert result["module"].eval_history, "the run evaluated"


@pytest.mark.slow
def test_fused_head_under_fsdp_ends_where_the_unfused_head_under_ddp_does(tmp_path):
    """Two CPU processes: FSDP2 all-gathers the root's parameters (the lm-head's among them) in the model's own
    forward, which the fused path runs with an identity head, and the head's gradient is reduce-scattered."""
    overrides = [*GRPO, "trainer.max_epochs=1", "method.prompts_per_minibatch=2", "method.kl_coef=0.01"]
    runs = {"ddp": ["model.fused_lm_head=false"], "fsdp": ["model.fused_lm_head=true"]}
    for trainer, extra in runs.items():
        proc = run_two_processes([*overrides, *extra, f"stages.main.save_dir={tmp_path}/{trainer}/model"],
                                 tmp_path / trainer, trainer)
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_weights(saved_weights(tmp_path / "ddp" / "model"), saved_weights(tmp_path / "fsdp" / "model"), 1e-5)
