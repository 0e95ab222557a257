"""train(cfg): the pipeline behind `python train.py`.

Stages, each a Lightning fit over the same DataModule:
  teacher (optional) SFT of a second model (e.g. DistillSpec's target) from `teacher.model`, cached like warm-up;
           the method receives it as `teacher=`;
  warmup  (optional) SFT from the initial model, on `warmup.data` if given (e.g. task A of a two-stage experiment)
          else on `data`; its result is cached under paths.cache_dir and reused; its row is evaluated on `data`;
  reward_model (optional) a reward-model method (e.g. pairwise_rm, bt_rm) trained on its own data
          (`reward_model.data`) from a copy of the warm-up model, cached like warm-up; the main method receives the
          trained network (a judge LM or a ValueModel) as `reward_model=`;
  main    the experiment's method, from the warm-up model (resumable with ckpt_path=...);
  control (optional) a baseline from the same start with the same trainer settings, e.g. continued SFT.
Every evaluation of every stage becomes a row of the results table, printed and written to results.json.
The cached stages (teacher, warmup, reward_model) run `trainer` with their own `max_epochs`, never the main stage's
`trainer.max_steps`, plus their optional `<stage>.trainer` overrides; their cache keys hold the trainer settings
that change what they learn (`RESULT_SETTINGS`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from posttrain.models import builders
from posttrain.models.value_head import ValueModel
from posttrain.utils.config import ConfigError


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)


def train(cfg: DictConfig) -> dict:
    register_resolvers()
    L.seed_everything(cfg.seed, workers=True)
    model, tokenizer = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    rows: list[dict] = []
    start, extra = model, {}
    if cfg.get("teacher"):
        extra["teacher"], teacher_row = teacher_stage(cfg, tokenizer, datamodule)
        rows.append(teacher_row)
    if cfg.get("warmup"):
        start, warm_row = warmup_stage(cfg, model, tokenizer, datamodule)
        rows.append(warm_row)
    main_extra = dict(extra)
    if cfg.get("reward_model"):
        main_extra["reward_model"], reward_row = reward_model_stage(cfg, start, tokenizer)
        rows.append(reward_row)
    module = instantiate(cfg.method, model=copy.deepcopy(start) if cfg.get("control") else start,
                         tokenizer=tokenizer, _convert_="all", **main_extra)
    trainer = make_trainer(cfg, "main")
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    rows += history_rows(cfg.name, module.eval_history)
    if cfg.get("control"):
        control = instantiate(cfg.control.method, model=start, tokenizer=tokenizer, _convert_="all", **extra)
        control_trainer = make_trainer(cfg, "control")
        control_trainer.fit(control, datamodule=datamodule)
        rows += history_rows(cfg.control.name, control.eval_history)
    report(cfg, rows)
    if cfg.get("save_model") and trainer.is_global_zero:
        builders.save(module.model, tokenizer, os.path.join(cfg.paths.output_dir, "model"))
    return {"module": module, "trainer": trainer, "rows": rows, "datamodule": datamodule,
            "reward_model": main_extra.get("reward_model")}


def make_trainer(cfg: DictConfig, stage: str | None, **overrides) -> L.Trainer:
    """The configured trainer with this stage's checkpoint folder and log name (stage None: no logs, no checkpoints)."""
    if stage is None:
        return instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False, **overrides)
    callbacks = []
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        callback = instantiate(callback_cfg)
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = os.path.join(cfg.paths.output_dir, "checkpoints", stage)
        callbacks.append(callback)
    loggers = [instantiate(logger_cfg, name=stage) for logger_cfg in (cfg.get("logger") or {}).values()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def warmup_stage(cfg: DictConfig, model, tokenizer, datamodule):
    """SFT from the initial model; reuses the cached result of an identical earlier warm-up.

    It trains on `warmup.data` when set (and on `data` otherwise), and is evaluated on `data`, the main stage's
    held-out splits, so its row is the common starting point of the main and control stages.
    """
    if "method" not in cfg.warmup or "max_epochs" not in cfg.warmup:
        raise ConfigError("warmup: needs warmup.method (an SFT method config) and warmup.max_epochs")
    train_data = warmup_datamodule(cfg, tokenizer, datamodule)
    return cached_stage(cfg, cfg.warmup, lambda: model, tokenizer, "warmup", "sft (start)", warmup_cache_dir(cfg),
                        train_data, sft_evaluation_data(datamodule, train_data))


def warmup_cache_dir(cfg: DictConfig) -> str:
    """Where the warm-up of these settings is cached (`warmup` holds its optional own data config; `data` stays in
    the key because the cached row is evaluated on it)."""
    return cache_dir(cfg, "warmup", {"model": cfg.model, "data": cfg.data, "warmup": cfg.warmup, "seed": cfg.seed,
                                     "trainer": stage_trainer_key(cfg, cfg.warmup, "warmup")})


def warmup_datamodule(cfg: DictConfig, tokenizer, datamodule):
    """The warm-up's own data (`warmup.data`, a full data config) when set, else the main stage's `datamodule`."""
    if cfg.warmup.get("data") is None:
        return datamodule
    return instantiate(cfg.warmup.data, tokenizer=tokenizer)


def teacher_stage(cfg: DictConfig, tokenizer, datamodule):
    """The second model (`teacher.model`) SFT'd on the same data for `teacher.max_epochs`, cached like warm-up."""
    if "model" not in cfg.teacher or "method" not in cfg.teacher or "max_epochs" not in cfg.teacher:
        raise ConfigError("teacher: needs teacher.model, teacher.method (an SFT method config) and teacher.max_epochs")
    model, teacher_tokenizer = instantiate(cfg.teacher.model)
    if len(teacher_tokenizer) != len(tokenizer):
        raise ConfigError(f"teacher.model: its vocabulary ({len(teacher_tokenizer)}) differs from the model's "
                          f"({len(tokenizer)}); the two models must share the tokenizer")
    directory = cache_dir(cfg, "teacher", {"teacher": cfg.teacher, "data": cfg.data, "seed": cfg.seed,
                                           "trainer": stage_trainer_key(cfg, cfg.teacher, "teacher")})
    return cached_stage(cfg, cfg.teacher, lambda: model, tokenizer, "teacher", "teacher (sft)", directory, datamodule,
                        datamodule)


def reward_model_stage(cfg: DictConfig, start, tokenizer):
    """`reward_model.method` trained for `reward_model.max_epochs` on `reward_model.data` from a copy of `start`
    (the warm-up model) and evaluated on that data's held-out splits, or the result cached in
    `reward_model_cache_dir(cfg)`. Returns (the trained network, its results row)."""
    if any(key not in cfg.reward_model for key in ("method", "data", "max_epochs")):
        raise ConfigError("reward_model: needs reward_model.method (a reward-model method config), reward_model.data "
                          "(its data config) and reward_model.max_epochs")
    data = instantiate(cfg.reward_model.data, tokenizer=tokenizer)
    return cached_stage(cfg, cfg.reward_model, lambda: copy.deepcopy(start), tokenizer, "reward_model",
                        cfg.reward_model.get("name", "reward model"), reward_model_cache_dir(cfg), data, data)


def stage_trainer(cfg: DictConfig, stage_cfg: DictConfig, stage: str) -> L.Trainer:
    """A cached stage's trainer: `cfg.trainer` with the stage's epochs, none of the main stage's step limit, no
    validation during fit, and `<stage>.trainer`'s overrides (e.g. the gradient clipping that a main stage with
    PPO's manual optimisation turns off)."""
    return make_trainer(cfg, stage, **{"limit_val_batches": 0, "check_val_every_n_epoch": None,
                                       "val_check_interval": None, "num_sanity_val_steps": 0,
                                       **stage_trainer_overrides(stage_cfg, stage)})


def reward_model_trainer(cfg: DictConfig) -> L.Trainer:
    return stage_trainer(cfg, cfg.reward_model, "reward_model")


def reward_model_cache_dir(cfg: DictConfig) -> str:
    """Where the reward model of these settings is cached: its own config, what it starts from (the warm-up's
    key, or the initial model without a warm-up) and the trainer settings it was trained with."""
    start = warmup_cache_dir(cfg) if cfg.get("warmup") else cfg.model
    return cache_dir(cfg, "reward_model", {"start": start, "reward_model": cfg.reward_model, "seed": cfg.seed,
                                           "trainer": stage_trainer_key(cfg, cfg.reward_model, "reward_model")})


# Trainer settings that change what a cached stage learns; its epochs and overrides come from the stage's config.
RESULT_SETTINGS = ("precision", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
                   "limit_train_batches", "devices", "num_nodes")


def stage_trainer_overrides(stage_cfg: DictConfig, stage: str) -> dict:
    """A cached stage's trainer arguments over `cfg.trainer`: `<stage>.max_epochs`, no step limit (the main stage's
    `trainer.max_steps` is not the stage's), then `<stage>.trainer` (any Trainer argument but max_epochs)."""
    own = OmegaConf.to_container(stage_cfg.get("trainer") or OmegaConf.create({}), resolve=True)
    if "max_epochs" in own:
        raise ConfigError(f"{stage}.trainer.max_epochs: set {stage}.max_epochs instead")
    return {"max_epochs": stage_cfg.get("max_epochs"), "max_steps": -1, **own}


def stage_trainer_key(cfg: DictConfig, stage_cfg: DictConfig, stage: str) -> dict:
    """The part of a cached stage's cache key that its trainer decides: `RESULT_SETTINGS` as the stage runs them."""
    return {**{key: cfg.trainer.get(key) for key in RESULT_SETTINGS}, **stage_trainer_overrides(stage_cfg, stage)}


def save_stage_model(model, tokenizer, directory: str) -> None:
    """A judge LM as a model directory; a ValueModel as its backbone's directory plus the head's weights."""
    if isinstance(model, ValueModel):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    else:
        builders.save(model, tokenizer, directory)


def load_stage_model(directory: str):
    """What `save_stage_model` wrote, in float32: a ValueModel where a head was saved, else the LM."""
    if os.path.isfile(os.path.join(directory, ValueModel.HEAD_FILE)):
        return ValueModel.from_pretrained(directory).to(torch.float32)
    return builders.from_pretrained(directory)[0].to(torch.float32)


def cache_dir(cfg: DictConfig, stage: str, key: dict) -> str:
    """paths.cache_dir/<stage>-<hash of everything the stage's result depends on>."""
    text = OmegaConf.to_yaml(OmegaConf.create(key))
    return os.path.join(cfg.paths.cache_dir, stage + "-" + hashlib.sha256(text.encode()).hexdigest()[:12])


def cached_stage(cfg: DictConfig, stage_cfg: DictConfig, model_fn, tokenizer, stage: str, label: str,
                 directory: str, train_data, eval_data):
    """Trains `stage_cfg.method` on `model_fn()` for `stage_cfg.max_epochs` on `train_data`, evaluates it on
    `eval_data` and saves both in `directory`; or loads what an identical earlier stage saved there (without
    building the start model). Returns (the trained network, its results row)."""
    metrics_path = os.path.join(directory, "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as handle:
            return load_stage_model(directory), json.load(handle)
    module = instantiate(stage_cfg.method, model=model_fn(), tokenizer=tokenizer, _convert_="all")
    trainer = stage_trainer(cfg, stage_cfg, stage)
    trainer.fit(module, datamodule=train_data)
    validator = make_trainer(cfg, None, enable_progress_bar=False, precision=trainer.precision)
    validator.validate(module, datamodule=eval_data, verbose=False)
    row = {"run": label, **module.eval_history[-1], "step": trainer.global_step}
    if trainer.is_global_zero:
        save_stage_model(module.model, tokenizer, directory)
        with open(metrics_path, "w") as handle:
            json.dump(row, handle, indent=1)
    return module.model, row


def sft_evaluation_data(datamodule, train_data):
    """Where an SFT stage is scored: on the main stage's data, unless that data cannot check generated answers (e.g.
    preference pairs for a reward model); then on the stage's own training data's held-out splits."""
    return datamodule if hasattr(datamodule, "is_correct") else train_data


def history_rows(name: str, history: list[dict]) -> list[dict]:
    rows = []
    for entry in history:
        label = f"{name} iteration {entry['iteration']}" if "iteration" in entry else f"{name} epoch {entry['epoch'] + 1}"
        label = f"{name} (start)" if entry.get("epoch", 0) < 0 else label
        rows.append({"run": label, **entry})
    return rows


@rank_zero_only
def report(cfg: DictConfig, rows: list[dict]) -> None:
    if not rows:
        return
    metrics = sorted({k for r in rows for k in r if "/" in k}, key=lambda k: (k.split("/")[1], k))
    header = ["run", "step", *metrics]
    table = [[str(r["run"]), str(r.get("step", "")), *(f"{r[m]:.4f}" if m in r else "" for m in metrics)] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table]
    print("\n" + "\n".join(lines) + "\n", flush=True)
    os.makedirs(cfg.paths.output_dir, exist_ok=True)
    with open(os.path.join(cfg.paths.output_dir, "results.json"), "w") as handle:
        json.dump({"name": cfg.name, "seed": cfg.seed, "rows": rows}, handle, indent=1)
