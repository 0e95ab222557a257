"""The pipeline of stages: order, removal, own data and trainers, cache keys and hits, controls, dataset stages,
logger=none, reloading in the configured dtype."""
import json
import zlib

import pytest
import torch
from omegaconf import OmegaConf

from posttrain.models import tiny_llama
from posttrain.models.value_head import ValueModel
from posttrain.pipeline import plan, train
from posttrain.pipeline.outputs import load_stage_model, read_rows, save_stage_model, write_rows
from posttrain.pipeline.run import Pipeline, make_trainer
from posttrain.utils.config import ConfigError
from tests.helpers import compose_config


def keys(cfg) -> dict[str, str]:
    return {p.stage.key: p.key for p in plan(cfg)}


def experiment_keys(tmp_path, experiment: str, *overrides: str) -> dict[str, str]:
    return keys(compose_config([f"experiment={experiment}", *overrides], tmp_path))


def test_stages_run_after_what_they_start_from_and_take_as_inputs(tmp_path):
    order = {e: [p.stage.key for p in plan(compose_config([f"experiment={e}"], tmp_path))]
             for e in ("distillspec", "pairwise_rl", "spark", "rs_sft", "sft")}
    assert order == {"distillspec": ["teacher", "warmup", "main", "control"],
                     "pairwise_rl": ["warmup", "reward_model", "main"], "spark": ["warmup", "main", "control"],
                     "rs_sft": ["warmup", "generate", "main"], "sft": ["main"]}


def test_a_stage_removed_from_the_command_line(tmp_path):
    cfg = compose_config(["experiment=spin", "stages.warmup=null"], tmp_path)
    planned = {p.stage.key: p.stage for p in plan(cfg)}
    assert list(planned) == ["main", "control"] and planned["main"].start == planned["control"].start == "model"
    with pytest.raises(ConfigError, match=r"stages\.main\.inputs\.teacher"):
        plan(compose_config(["experiment=distillspec", "stages.teacher=null"], tmp_path))


@pytest.mark.parametrize("override, key", [("+stages.main.epochs=3", "stages.main.epochs"),
                                           ("stages.main.output=weights", "stages.main.output"),
                                           ("stages.main.start=nowhere", "stages.main.start"),
                                           ("stages.main.start=reward_model", "stages.main.start")])
def test_a_bad_stage_names_its_key(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan(compose_config(["experiment=pairwise_rl", override], tmp_path))


def test_a_dataset_stage_without_a_model_keeps_its_key_when_the_model_changes(tmp_path):
    """`start: none`: the stage's method gets model=None, and the model config is not in its key (nor, through its
    output, in the keys of the dataset stages that read it)."""
    def keys_of(*overrides):
        return experiment_keys(tmp_path, "internvla_m1", *overrides)

    with_model, other_model = keys_of("stages.demos.start=model"), keys_of("stages.demos.start=model",
                                                                          "model.view_width=32")
    assert with_model["demos"] != other_model["demos"]  # start: model hashes the model config it is given
    fresh, changed = keys_of(), keys_of("model.view_width=32")  # the experiment's demos: start: none
    assert fresh["demos"] == changed["demos"] != with_model["demos"]
    assert fresh["main"] != changed["main"]  # the stage that trains the model still follows it
    cfg = compose_config(["experiment=internvla_m1"], tmp_path)
    pipeline = Pipeline(cfg, plan(cfg))
    assert pipeline.start_model(pipeline.by_key["demos"]) is None
    assert pipeline.start_tokenizer(pipeline.by_key["demos"]) is None
    assert pipeline.start_tokenizer(pipeline.by_key["main"]) is pipeline.tokenizer


@pytest.mark.parametrize("experiment, dataset, reused, followers, from_nothing", [
    ("internvla_m1", "demos", ["grounding"], ["main", "vanilla"], True),  # stage 1 has its own epochs; arms follow
    ("emma", "demos", ["pool"], [], True),
    ("rs_sft", "generate", ["warmup"], ["main"], False)])  # generate samples from the warm-up, which the fit trains
def test_a_dataset_stage_key_leaves_out_how_long_the_run_trains(experiment, dataset, reused, followers, from_nothing,
                                                                tmp_path):
    """A dataset stage only predicts: the run's fit settings do not reach its key, so training the later stages
    longer reuses the cached data (and the stages trained on it for epochs of their own)."""
    base = experiment_keys(tmp_path, experiment)
    longer = experiment_keys(tmp_path, experiment, "trainer.max_epochs=9", "trainer.max_steps=7")
    assert {k: longer[k] for k in [dataset, *reused]} == {k: base[k] for k in [dataset, *reused]}
    assert all(longer[k] != base[k] for k in followers)
    if from_nothing:  # a dataset stage that starts from no trained stage: no fit setting reaches it
        fit = experiment_keys(tmp_path, experiment, "trainer.limit_train_batches=3",
                              "trainer.check_val_every_n_epoch=2", "trainer.gradient_clip_val=0.5",
                              "trainer.accumulate_grad_batches=2")
        assert fit[dataset] == base[dataset]
    precision = experiment_keys(tmp_path, experiment, "trainer.precision=bf16-true")
    assert precision[dataset] != base[dataset]  # what changes a prediction still counts


@pytest.mark.parametrize("override, key", [("stages.main.start=none", "stages.main.start"),
                                           ("+stages.demos.model={_target_:x}", "stages.demos.model")])
def test_start_none_is_for_dataset_stages_without_a_model_of_their_own(override, key, tmp_path):
    overrides = ["experiment=internvla_m1", override]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan(compose_config(overrides, tmp_path))


def test_command_line_overrides_of_the_method_reach_the_control(tmp_path):
    cfg = compose_config(["experiment=spark", "method.clip_eps=0.3", "method.generation.max_new_tokens=5"], tmp_path)
    control, main = cfg.stages.control.method, cfg.stages.main.method
    assert control.recycle is False and main.recycle is True
    assert control.clip_eps == main.clip_eps == 0.3 and control.generation.max_new_tokens == 5
    assert OmegaConf.to_container(control, resolve=True) == {**OmegaConf.to_container(main, resolve=True),
                                                             "recycle": False}
    kd = compose_config(["experiment=distillspec", "method.temperature=2.0"], tmp_path).stages.control.method
    assert kd.temperature == 2.0 and kd.fixed_fraction == 1.0 and kd.divergence == "forward_kl"


def test_a_control_stage_trains_from_the_same_start(tmp_path):
    cfg = compose_config(["experiment=otr", "debug=tiny", "stages.warmup.trainer.max_epochs=1",
                          "trainer.max_epochs=1"], tmp_path)
    result = train(cfg)
    # the warm-up's dev validation on its way to the target, its row on stage 2's splits, then main and control
    assert [r["run"] for r in result["rows"]] == ["sft (start) epoch 1", "sft (start)", "test epoch 1", "sft epoch 1"]
    start = load_stage_model(result["stages"]["warmup"].planned.directory, cfg.model)
    main, control = result["stages"]["main"].module.model, result["stages"]["control"].module.model
    for name, param in start.named_parameters():  # both moved away from the one start, each its own way
        assert not torch.equal(param, dict(main.named_parameters())[name])
        assert not torch.equal(dict(control.named_parameters())[name], dict(main.named_parameters())[name])


def test_warmup_data_overrides_data_for_the_warmup_only(tmp_path):
    two_stage = ["experiment=otr", "debug=tiny"]
    planned = {p.stage.key: p for p in plan(compose_config(two_stage, tmp_path))}
    assert planned["warmup"].data.task.operations == ["+", "+", "+", "-"]
    assert planned["main"].data.task.operations == ["-"]
    plain = compose_config([*two_stage, "stages.warmup.data=null"], tmp_path)
    assert {p.stage.key: p for p in plan(plain)}["warmup"].data.task.operations == ["-"]  # default: the run's data
    other = compose_config([*two_stage, "stages.warmup.data.task.digits=[1,1]"], tmp_path)
    assert len({keys(compose_config(two_stage, tmp_path))["warmup"], keys(plain)["warmup"],
                keys(other)["warmup"]}) == 3


def test_two_stage_rows_report_retention_and_entropy(tmp_path):
    rows = train(compose_config(["experiment=otr", "debug=tiny", "stages.control=null",
                                 "stages.warmup.trainer.max_epochs=1", "trainer.max_epochs=1"], tmp_path))["rows"]
    start = next(r for r in rows if r["run"] == "sft (start)")
    assert rows[-1]["run"].startswith("test epoch")
    for row in (start, rows[-1]):  # the start is scored on stage 2's splits: task B and the retained task A
        for split in ("val", "test_ood", "retain"):
            for name in ("accuracy", "nll", "entropy"):
                assert f"{split}/{name}" in row, (row["run"], split, name)
    assert rows[-1]["retain/entropy"] > 0


def test_reward_model_warmup_is_scored_on_its_own_data(tmp_path):
    """Preference pairs cannot score generated answers, so the SFT start row comes from the warm-up data's splits."""
    cfg = compose_config(["experiment=pairwise_rm", "debug=tiny", "stages.control=null",
                          "stages.warmup.trainer.max_epochs=1", "trainer.max_epochs=1",
                          "stages.warmup.data.train_size=8", "stages.warmup.data.eval_size=8"], tmp_path)
    rows = train(cfg)["rows"]
    assert rows[0]["run"] == "sft (start)" and "val/accuracy" in rows[0]
    assert [r["run"] for r in rows[1:]] == ["test (start)", "test epoch 1"] and "val/pair_accuracy" in rows[-1]


RL = ["experiment=pairwise_rl", "debug=tiny", "stages.warmup=null"]


def test_reward_model_stage_has_its_own_trainer_not_the_main_stages_limits(tmp_path):
    for experiment in ("pairwise_rl", "bt_ppo"):
        cfg = compose_config([f"experiment={experiment}", "debug=tiny", "trainer.max_steps=10", "trainer.max_epochs=1",
                              "stages.reward_model.trainer.max_epochs=5"], tmp_path)
        stage = {p.stage.key: p.stage for p in plan(cfg)}["reward_model"]
        trainer = make_trainer(cfg, stage)
        assert (trainer.max_steps, trainer.max_epochs) == (-1, 5)
        assert trainer.gradient_clip_val == 1.0  # as experiment=pairwise_rm; the main stage's PPO clips on its own
        assert cfg.trainer.gradient_clip_val is None


@pytest.mark.parametrize("override", ["trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2",
                                      "+trainer.gradient_clip_algorithm=value", "trainer.limit_train_batches=3",
                                      "trainer.devices=2", "stages.reward_model.trainer.gradient_clip_val=0.5",
                                      "stages.reward_model.trainer.max_epochs=2", "seed=1",
                                      "stages.reward_model.data.task.label_noise=0.2",
                                      "stages.reward_model.method.optimizer.lr=1e-4", "model.hidden_size=64"])
def test_a_change_in_any_resolved_dependency_changes_the_cache_key(override, tmp_path):
    assert keys(compose_config([*RL, override], tmp_path))["reward_model"] != keys(compose_config(RL, tmp_path))[
        "reward_model"], override


def test_a_change_upstream_changes_the_keys_downstream_and_interpolations_hash_as_values(tmp_path):
    base = keys(compose_config(["experiment=pairwise_rl"], tmp_path))
    warm = keys(compose_config(["experiment=pairwise_rl", "stages.warmup.method.optimizer.lr=1e-3"], tmp_path))
    assert warm["warmup"] != base["warmup"] and warm["reward_model"] != base["reward_model"]
    # the spark warm-up's val_size is ${data.task.val_size}: the value counts, not the text of the interpolation
    spark = keys(compose_config(["experiment=spark"], tmp_path))["warmup"]
    assert keys(compose_config(["experiment=spark", "data.task.val_size=999"], tmp_path))["warmup"] != spark


def test_main_stage_limits_and_logging_leave_the_cached_stages_keys_alone(tmp_path):
    cfg = keys(compose_config(RL, tmp_path))
    limited = keys(compose_config([*RL, "trainer.max_steps=10", "trainer.max_epochs=7", "trainer.log_every_n_steps=3",
                                   "+trainer.enable_progress_bar=false", "method.ppo.epochs=3"], tmp_path))
    assert limited["reward_model"] == cfg["reward_model"] and limited["main"] != cfg["main"]
    for experiment in ("grpo", "nft", "rft", "pairwise_rl", "bt_ppo", "rs_sft"):  # one shared warm-up checkpoint
        assert keys(compose_config([f"experiment={experiment}"], tmp_path))["warmup"] == \
            keys(compose_config(["experiment=grpo"], tmp_path))["warmup"], experiment


def test_the_validation_that_scores_evaluate_on_is_in_the_key(tmp_path):
    # the cached warm-up is validated on evaluate_on by the top-level trainer (its own sets limit_val_batches: 0)
    full = keys(compose_config(["experiment=grpo"], tmp_path))
    one_batch = keys(compose_config(["experiment=grpo", "trainer.limit_val_batches=1"], tmp_path))
    assert one_batch["warmup"] != full["warmup"]


def test_cached_rows_take_the_current_stage_name(tmp_path):
    write_rows([{"run": "sft (start) (start)"}, {"run": "sft (start) epoch 2"}, {"run": "sft (start)"}], tmp_path,
               "sft (start)")
    assert [row["run"] for row in read_rows(tmp_path, "warm")] == ["warm (start)", "warm epoch 2", "warm"]
    assert read_rows(tmp_path / "absent", "warm") is None


def test_a_cached_stage_is_reused_and_a_changed_one_retrains(tmp_path, monkeypatch):
    built = []
    fresh_model = Pipeline.fresh_model
    monkeypatch.setattr(Pipeline, "fresh_model", lambda self: built.append(1) or fresh_model(self))
    base = ["experiment=spin", "debug=tiny", "stages.control=null", "stages.warmup.trainer.max_epochs=1",
            "method.num_iterations=1", "method.epochs_per_iteration=1"]
    first = train(compose_config(base, tmp_path / "first"))
    assert len(built) == 1  # the warm-up's start; main starts from the warm-up
    cache = f"paths.cache_dir={tmp_path / 'first' / 'cache'}"
    second = train(compose_config([*base, cache], tmp_path / "second"))
    assert len(built) == 1  # a warm-up hit builds no fresh model
    warm, again = first["stages"]["warmup"], second["stages"]["warmup"]
    assert again.module is None and again.planned.directory == warm.planned.directory  # a hit: nothing trained
    # every stage starts from the seed, and the cached model reads back exactly: the same table either way
    assert again.rows == warm.rows and second["rows"] == first["rows"]
    renamed = train(compose_config([*base, cache, "stages.warmup.name=warm"], tmp_path / "renamed"))
    assert renamed["stages"]["warmup"].module is None  # the name is not in the key
    # the warm-up's rows (one per validated epoch, then its final row) take the new name
    assert [row["run"] for row in renamed["stages"]["warmup"].rows] == \
        [row["run"].replace(warm.planned.stage.name, "warm") for row in warm.rows]
    changed = train(compose_config([*base, cache, "stages.warmup.method.optimizer.lr=1e-2"], tmp_path / "third"))
    assert changed["stages"]["warmup"].module is not None
    assert changed["stages"]["warmup"].planned.directory != warm.planned.directory


def test_the_dataset_stage_writes_verified_samples_that_the_next_stage_trains_on(tmp_path):
    overrides = ["experiment=rs_sft", "debug=tiny", "stages.warmup.trainer.max_epochs=1", "trainer.max_epochs=1",
                 "reward._target_=tests.helpers.CoinFlipVerifier", "stages.generate.method.num_samples=4",
                 "stages.generate.method.max_per_prompt=4", "stages.main.data.batch_size=4"]
    result = train(compose_config(overrides, tmp_path))
    generate = result["stages"]["generate"]
    path = generate.output
    assert path.startswith(str(tmp_path / "cache" / "generate-")) and path.endswith("train.jsonl")
    with open(path) as handle:
        written = [json.loads(line) for line in handle]
    assert written and all(set(e) == {"prompt", "response", "answer"} for e in written)
    assert all(zlib.crc32(e["response"].encode()) % 2 == 0 for e in written)  # the coin flip's verified answers
    prompts = {e["prompt"] for e in result["stages"]["main"].datamodule.splits["train"]}
    assert [e["prompt"] for e in result["stages"]["main"].datamodule.splits["train"]] == [e["prompt"] for e in written]
    assert prompts <= {e["prompt"] for e in result["stages"]["warmup"].datamodule.splits["train"]}
    assert generate.rows[0]["dataset/examples"] == len(written) and 0 < generate.rows[0]["dataset/prompts_kept"] <= 1
    assert result["rows"][-1]["run"] == "test" and "val/accuracy" in result["rows"][-1]  # scored on the prompts data
    again = train(compose_config([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "again"))
    assert again["stages"]["generate"].module is None and again["stages"]["generate"].output == path


def test_logger_none_runs_without_a_learning_rate_monitor(tmp_path):
    result = train(compose_config(["experiment=sft", "debug=tiny", "logger=none", "trainer.max_epochs=1"], tmp_path))
    trainer = result["trainer"]
    assert trainer.global_step == 2 and trainer.logger is None
    assert not [c for c in trainer.callbacks if type(c).__name__ == "LearningRateMonitor"]
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize("value_head", [False, True])
def test_a_cached_model_comes_back_in_the_configured_dtype(value_head, tmp_path):
    model, tokenizer = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model = ValueModel(model) if value_head else model
    save_stage_model(model, tokenizer, str(tmp_path))
    for dtype in ("bfloat16", "float32"):
        loaded = load_stage_model(str(tmp_path), {"_target_": "posttrain.models.from_pretrained", "dtype": dtype})
        backbone = loaded.backbone if value_head else loaded
        assert isinstance(loaded, ValueModel) == value_head
        assert {p.dtype for p in backbone.parameters()} == {getattr(torch, dtype)}
    tiny = load_stage_model(str(tmp_path), {"_target_": "posttrain.models.tiny_llama"})
    ids = torch.tensor([[1, 5, 6, 7]])
    if value_head:
        torch.testing.assert_close(tiny.score(ids, torch.ones_like(ids)), model.score(ids, torch.ones_like(ids)))
    else:
        torch.testing.assert_close(tiny(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_stage_trains_to_a_target_on_its_dev_split_and_its_callbacks_are_in_the_key(tmp_path):
    tiny = ["experiment=otr", "debug=tiny", "stages.control=null", "trainer.max_epochs=1",
            "stages.warmup.trainer.max_epochs=5"]
    # any accuracy exceeds -1: the warm-up stops at its first validation, on dev, never on val/test_ood/retain
    rows = train(compose_config([*tiny, "stages.warmup.callbacks.stop_at_target.stopping_threshold=-1"],
                                tmp_path))["rows"]
    warmup = [r for r in rows if r["run"].startswith("sft (start) epoch")]
    assert [r["run"] for r in warmup] == ["sft (start) epoch 1"] and "dev/accuracy" in warmup[0]
    assert not any(k.startswith(("val/", "test_ood/", "retain/")) for k in warmup[0])
    start = next(r for r in rows if r["run"] == "sft (start)")
    assert start["step"] == warmup[0]["step"] == 2 and "retain/accuracy" in start  # 2 steps per epoch (debug=tiny)
    # unreachable: it runs to its cap
    rows = train(compose_config([*tiny, "stages.warmup.callbacks.stop_at_target.stopping_threshold=2"],
                                tmp_path / "cap"))["rows"]
    assert [r["run"] for r in rows if r["run"].startswith("sft (start) epoch")][-1] == "sft (start) epoch 5"
    base = keys(compose_config(tiny, tmp_path))["warmup"]
    other = keys(compose_config([*tiny, "stages.warmup.callbacks.stop_at_target.stopping_threshold=0.3"], tmp_path))
    assert other["warmup"] != base
    with pytest.raises(ConfigError, match=r"stages\.warmup\.callbacks"):
        plan(compose_config([*tiny, "stages.warmup.callbacks=3"], tmp_path))


def test_the_printed_table_leaves_a_scored_stages_epoch_validations_to_results_json():
    from posttrain.pipeline.report import printed_rows

    rows = [{"run": "sft (start) epoch 1"}, {"run": "sft (start) epoch 2"}, {"run": "sft (start)"},
            {"run": "spin (start)"}, {"run": "spin iteration 1"}, {"run": "sft epoch 1"}, {"run": "sft epoch 2"}]
    # the warm-up's stopping curve is left out; a stage without a final row keeps its epochs
    assert [r["run"] for r in printed_rows(rows)] == ["sft (start)", "spin (start)", "spin iteration 1",
                                                     "sft epoch 1", "sft epoch 2"]
