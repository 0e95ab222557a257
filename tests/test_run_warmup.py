"""The warm-up stage's own data (`warmup.data`): it trains there, is scored on the main data, and is cached apart."""
import pytest
from hydra.utils import instantiate

from posttrain.run import reward_model_cache_dir, train, warmup_cache_dir, warmup_datamodule
from tests.helpers import compose_config

TWO_STAGE = ["experiment=otr", "debug=tiny", "control=null", "warmup.max_epochs=1", "trainer.max_epochs=1"]


def test_warmup_data_overrides_data_for_the_warmup_only(tmp_path):
    cfg = compose_config(TWO_STAGE, tmp_path)
    tokenizer = instantiate(cfg.model)[1]
    main = instantiate(cfg.data, tokenizer=tokenizer)
    warm = warmup_datamodule(cfg, tokenizer, main)
    assert warm is not main and warm.task.operations == ("+",) and main.task.operations == ("-",)
    plain = compose_config([*TWO_STAGE, "warmup.data=null"], tmp_path)
    assert warmup_datamodule(plain, tokenizer, main) is main  # backwards compatible: no warmup.data, same data
    other = compose_config([*TWO_STAGE, "warmup.data.task.digits=[1,1]"], tmp_path)
    assert len({warmup_cache_dir(cfg), warmup_cache_dir(plain), warmup_cache_dir(other)}) == 3


def test_two_stage_rows_report_retention_and_entropy(tmp_path):
    rows = train(compose_config(TWO_STAGE, tmp_path))["rows"]
    assert rows[0]["run"] == "sft (start)" and rows[-1]["run"].startswith("test epoch")
    for row in (rows[0], rows[-1]):  # the start is scored on stage 2's splits: task B and the retained task A
        for split in ("val", "test_ood", "retain"):
            for name in ("accuracy", "nll", "entropy"):
                assert f"{split}/{name}" in row, (row["run"], split, name)
    assert rows[-1]["retain/entropy"] > 0


def test_reward_model_warmup_is_scored_on_its_own_data(tmp_path):
    """Preference pairs cannot score generated answers, so the SFT start row comes from warmup.data's splits."""
    cfg = compose_config(["experiment=pairwise_rm", "debug=tiny", "control=null", "warmup.max_epochs=1",
                          "trainer.max_epochs=1", "warmup.data.train_size=8", "warmup.data.eval_size=8"], tmp_path)
    rows = train(cfg)["rows"]
    assert rows[0]["run"] == "sft (start)" and "val/accuracy" in rows[0]
    assert [r["run"] for r in rows[1:]] == ["test (start)", "test epoch 1"] and "val/pair_accuracy" in rows[-1]


RL = ["experiment=pairwise_rl", "debug=tiny", "warmup=null"]


def test_reward_model_stage_has_its_own_trainer_not_the_main_stages_limits(tmp_path):
    from posttrain.run import reward_model_trainer

    for experiment in ("pairwise_rl", "bt_ppo"):
        cfg = compose_config([f"experiment={experiment}", "debug=tiny", "warmup=null", "trainer.max_steps=10",
                              "trainer.max_epochs=1", "reward_model.max_epochs=5"], tmp_path)
        trainer = reward_model_trainer(cfg)
        assert (trainer.max_steps, trainer.max_epochs) == (-1, 5)
        assert trainer.gradient_clip_val == 1.0  # as experiment=pairwise_rm; the main stage's PPO clips on its own
        assert cfg.trainer.gradient_clip_val is None


@pytest.mark.parametrize("override", ["trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2",
                                      "+trainer.gradient_clip_algorithm=value", "trainer.limit_train_batches=3",
                                      "trainer.devices=2", "reward_model.trainer.gradient_clip_val=0.5",
                                      "reward_model.max_epochs=2"])
def test_reward_model_cache_key_holds_every_trainer_setting_that_changes_it(override, tmp_path):
    base = reward_model_cache_dir(compose_config(RL, tmp_path))
    assert reward_model_cache_dir(compose_config([*RL, override], tmp_path)) != base, override


def test_main_stage_step_limits_share_the_cached_stages(tmp_path):
    """trainer.max_steps / max_epochs bound only the main stage, so the cached stages (and their keys) ignore them."""
    cfg = compose_config(RL, tmp_path)
    limited = compose_config([*RL, "trainer.max_steps=10", "trainer.max_epochs=7"], tmp_path)
    assert reward_model_cache_dir(limited) == reward_model_cache_dir(cfg)
    warm = ["experiment=pairwise_rl", "debug=tiny"]
    assert warmup_cache_dir(compose_config([*warm, "trainer.max_steps=10"], tmp_path)) == \
        warmup_cache_dir(compose_config(warm, tmp_path))
    assert warmup_cache_dir(compose_config([*warm, "trainer.precision=bf16-mixed"], tmp_path)) != \
        warmup_cache_dir(compose_config(warm, tmp_path))


def test_reward_model_trains_its_own_epochs_under_a_main_stage_step_limit(tmp_path):
    cfg = compose_config([*RL, "trainer.max_steps=1", "reward_model.max_epochs=2", "reward_model.data.train_size=8",
                          "reward_model.data.eval_size=8", "method.ppo.num_samples=2", "method.ppo.epochs=1",
                          "method.evaluator.sampled_k=0"], tmp_path)
    rows = train(cfg)["rows"]
    assert rows[0]["run"] == "pairwise judge" and rows[0]["step"] == 2  # one batch of 8 pairs per epoch
