"""The warm-up stage's own data (`warmup.data`): it trains there, is scored on the main data, and is cached apart."""
from hydra.utils import instantiate

from posttrain.run import train, warmup_cache_dir, warmup_datamodule
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
