"""train(cfg): run the experiment's stages in order, hand each one's output on, print and save the results table.

Each stage's method config is instantiated with `model=` (its start), `tokenizer=` and its inputs, then fitted by
a Lightning trainer on its datamodule; a dataset stage's module is run with `trainer.predict` over its data's
training prompts instead, and every predicted example becomes a line of its jsonl file (`output: dataset`), or the
module writes the predicted items as a folder itself (`output: dataset_dir`: its `write_dataset(items, directory)`).
Nothing here knows what a stage is for: warm-up, teacher, reward model, main and control are entries of `stages:`
(schema in `stages.py`, cache keys in `cache.py`).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from posttrain.models import sharding
from posttrain.pipeline import outputs
from posttrain.pipeline.cache import stage_dir, stage_key, stage_trainer_config, validator_config
from posttrain.pipeline.report import history_rows, report
from posttrain.pipeline.stages import DATASETS, FRESH, NO_MODEL, Stage, parse_stages, resolved
from posttrain.utils.config import check


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
    OmegaConf.register_new_resolver("add", lambda a, b: a + b, replace=True)
    OmegaConf.register_new_resolver("merge", merge_configs, replace=True)
    OmegaConf.register_new_resolver("per_env", per_env, replace=True)


def per_env(field: str, *, _root_: DictConfig):
    """`${per_env:eval_size}`: the experiment's `per_env.<env.id>.eval_size`, so one experiment carries the settings
    that depend on the environment; an environment without an entry is an error naming the missing key."""
    env_id, table = _root_.env.id, _root_.get("per_env") or {}
    check(env_id in table, f"per_env.{env_id}", f"no settings for env.id={env_id!r}; this experiment has them for "
          f"{sorted(table)}: add a per_env.{env_id} entry")
    check(isinstance(table[env_id], DictConfig), f"per_env.{env_id}", f"must be a mapping, got {table[env_id]!r}")
    check(field in table[env_id], f"per_env.{env_id}.{field}", "missing")
    return table[env_id][field]


def merge_configs(*configs):
    """`${merge:${method},{recycle:false}}`: the first config, resolved, with the later ones merged over it (so a
    control stage is the main method plus a few changes, and command-line overrides of `method.*` reach it)."""
    return OmegaConf.merge(*(resolved(c) if isinstance(c, DictConfig) else c for c in configs))


@dataclass
class Planned:
    stage: Stage
    key: str  # the cache key (computed for every stage: the keys of later stages include it)
    directory: str  # where its outputs go: the cache folder when cached, else the run's stages/<stage>
    data: DictConfig  # its data config, dataset inputs filled in


@dataclass
class StageResult:
    planned: Planned
    rows: list[dict]
    output: object  # the trained network, or the dataset file's path
    module: L.LightningModule | None = None  # None when the result came from the cache
    trainer: L.Trainer | None = None
    datamodule: L.LightningDataModule | None = None


def train(cfg: DictConfig) -> dict:
    """Runs every stage; returns the rows, each stage's StageResult (`stages`) and the `main` stage's (else the last
    stage's) module, trainer and datamodule."""
    register_resolvers()
    steps = plan(cfg)
    pipeline = Pipeline(cfg, steps)
    rows = []
    for planned in steps:
        rows += pipeline.run(planned).rows
    report(cfg, rows)
    last = pipeline.results.get("main") or pipeline.results[steps[-1].stage.key]
    return {"rows": rows, "stages": pipeline.results, "module": last.module, "trainer": last.trainer,
            "datamodule": last.datamodule}


def plan(cfg: DictConfig) -> list[Planned]:
    """Every stage's cache key, folder and data config, in run order, before anything runs. A dataset stage's file
    is `<its folder>/train.jsonl` (a `dataset_dir` stage's is the folder), so the stages that read it know (and hash)
    the path up front; it is written into their `data` config here."""
    stages = parse_stages(cfg)
    by_key, keys, planned = {s.key: s for s in stages}, {}, {}
    for stage in stages:
        for name, source in stage.data_inputs().items():
            path = outputs.dataset_path(planned[source].stage.output, planned[source].directory)
            OmegaConf.update(stage.node.data, name, path, force_add=True)
        data = stage.node.data if stage.node.get("data") is not None else cfg.data
        keys[stage.key] = stage_key(cfg, stage, data, model_config(cfg, by_key, stage), keys)
        planned[stage.key] = Planned(stage, keys[stage.key], stage_dir(cfg, stage, keys[stage.key]), data)
    return list(planned.values())


def model_config(cfg: DictConfig, by_key: dict[str, Stage], stage: Stage) -> DictConfig | None:
    """The model config the stage's network was first built from (followed through `start`); None: start: none."""
    if stage.start == NO_MODEL:
        return None
    if stage.start != "model":
        return model_config(cfg, by_key, by_key[stage.start])
    return stage.node.get("model") or cfg.model


class Pipeline:
    """The state between stages: their results, the shared tokenizer and datamodules."""

    def __init__(self, cfg: DictConfig, steps: list[Planned]):
        self.cfg, self.stages = cfg, [p.stage for p in steps]
        self.by_key = {stage.key: stage for stage in self.stages}
        self.results: dict[str, StageResult] = {}
        self.datamodules: dict[str, L.LightningDataModule] = {}  # resolved data config -> instance
        # The run's tokenizer; the model built with it is dropped: a `start: model` stage builds its own when it
        # trains (`fresh_model`), so a run whose stages all hit the cache or start from others never holds one.
        self.tokenizer = instantiate(cfg.model)[1]

    def run(self, planned: Planned) -> StageResult:
        stage = planned.stage
        rows = outputs.read_rows(planned.directory, stage.name) if stage.cache else None
        if rows is not None:
            result = StageResult(planned, rows, self.load_output(planned))
        else:
            result = self.fit(planned)
        self.results[stage.key] = result
        rank_zero = result.trainer is None or result.trainer.is_global_zero
        if stage.save_dir and stage.output not in DATASETS and rank_zero:
            outputs.save_stage_model(result.output, self.tokenizer, stage.save_dir)
        return result

    def fit(self, planned: Planned) -> StageResult:
        """Trains (or, for a dataset stage, runs) the stage; writes its output and rows when it is cached."""
        stage, directory = planned.stage, planned.directory
        L.seed_everything(self.cfg.seed, workers=True)  # each stage from the same seed, whatever ran (or hit) before
        datamodule = self.datamodule(planned.data)
        inputs = {argument: self.results[source].output for argument, source in stage.method_inputs().items()}
        module = instantiate(stage.node.method, model=self.start_model(stage), tokenizer=self.start_tokenizer(stage),
                             _convert_="all", **inputs)
        trainer = make_trainer(self.cfg, stage)
        check(stage.output != "dataset_dir" or hasattr(module, "write_dataset"), f"{stage.where}.output",
              f"dataset_dir needs a method that writes its folder (write_dataset); {type(module).__name__} has none")
        if stage.output in DATASETS:
            examples = gather(trainer, [e for batch in trainer.predict(module, datamodule=datamodule) for e in batch])
            output = outputs.dataset_path(stage.output, directory)
            if trainer.is_global_zero:
                write = module.write_dataset if stage.output == "dataset_dir" else outputs.write_dataset
                write(examples, directory)
            trainer.strategy.barrier()
            rows = [{"run": stage.name, "dataset/examples": len(examples), **getattr(module, "dataset_metrics", {})}]
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=stage.ckpt_path)
            output, rows = module.model, history_rows(stage.name, module.eval_history)
            if stage.node.get("evaluate_on") is not None:
                rows.append(self.evaluate(stage, module, trainer))
            output = sharding.plain_copy(output)  # FSDP: whole parameters, to save and to start later stages from
        if stage.cache and trainer.is_global_zero:
            if stage.output not in DATASETS:
                outputs.save_stage_model(output, self.tokenizer, directory)
            outputs.write_rows(rows, directory, stage.name)
        return StageResult(planned, rows, output, module, trainer, datamodule)

    def evaluate(self, stage: Stage, module, trainer: L.Trainer) -> dict:
        """One validation of the fitted module on `evaluate_on`: a row labelled with the stage's name."""
        validator = instantiate(validator_config(self.cfg, stage), callbacks=[], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False)
        validator.validate(module, datamodule=self.datamodule(stage.node.evaluate_on), verbose=False)
        return {"run": stage.name, **module.eval_history[-1], "step": trainer.global_step}

    def datamodule(self, data: DictConfig) -> L.LightningDataModule:
        """One instance per distinct resolved data config, shared by the stages that read it."""
        text = json.dumps(resolved(data), sort_keys=True, default=str)
        if text not in self.datamodules:
            self.datamodules[text] = instantiate(data, tokenizer=self.tokenizer)
        return self.datamodules[text]

    def start_tokenizer(self, stage: Stage):
        """The run's tokenizer, or None for `start: none`: its cache key leaves out the model config, tokenizer
        included, so nothing it writes may depend on it."""
        return None if stage.start == NO_MODEL else self.tokenizer

    def start_model(self, stage: Stage):
        """A fresh model (`start: model`), the start stage's output (a copy while a later stage still needs it), or
        None (`start: none`)."""
        if stage.start == NO_MODEL:
            return None
        if stage.start not in FRESH:
            source = self.results[stage.start].output
            return copy.deepcopy(source) if self.needed_after(stage, stage.start) else source
        if stage.node.get("model") is None:
            return self.fresh_model()
        model, tokenizer = instantiate(stage.node.model)
        if tokenizer is not None:  # None: a network without a vocabulary (e.g. EMMA's transfer model)
            check(len(tokenizer) == len(self.tokenizer), f"{stage.where}.model",
                  f"its vocabulary ({len(tokenizer)}) differs from the model's ({len(self.tokenizer)}); the models "
                  f"of one run share the tokenizer")
        return model

    def fresh_model(self):
        """A new model from the top-level model config (the same weights every time: builders seed or load them)."""
        return instantiate(self.cfg.model)[0]

    def needed_after(self, stage: Stage, source: str) -> bool:
        later = self.stages[self.stages.index(stage) + 1:]
        return any(source in other.depends_on() for other in later)

    def load_output(self, planned: Planned):
        if planned.stage.output in DATASETS:
            return outputs.dataset_path(planned.stage.output, planned.directory)
        return outputs.load_stage_model(planned.directory, model_config(self.cfg, self.by_key, planned.stage))


def make_trainer(cfg: DictConfig, stage: Stage) -> L.Trainer:
    """The stage's trainer: checkpoints in checkpoints/<stage>, logs named <stage>; the top-level callbacks and the
    stage's own (`stages.<key>.callbacks`); callbacks that need a logger (LearningRateMonitor) are left out when there
    is none (logger=none)."""
    loggers = [instantiate(logger_cfg, name=stage.key) for logger_cfg in (cfg.get("logger") or {}).values()]
    callbacks = []
    configs = [*(cfg.get("callbacks") or {}).values(), *(stage.node.get("callbacks") or {}).values()]
    for callback_cfg in configs:
        if callback_cfg is None:  # a callback removed with `~` or null
            continue
        callback = instantiate(callback_cfg)
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = os.path.join(cfg.paths.output_dir, "checkpoints", stage.key)
        if isinstance(callback, LearningRateMonitor) and not loggers:
            continue
        callbacks.append(callback)
    return instantiate(stage_trainer_config(cfg, stage), callbacks=callbacks, logger=loggers or False)


def gather(trainer: L.Trainer, items: list) -> list:
    """Every process's items, in rank order (each process predicted its share of the prompts)."""
    if trainer.world_size == 1:
        return items
    parts = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, items)
    return [item for part in parts for item in part]
