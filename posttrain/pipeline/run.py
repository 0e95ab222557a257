"""train(cfg): run the experiment's stages in order, hand each one's output on, print and save the results table.

Each stage is a method config instantiated with `model=` (its start), `tokenizer=` and its inputs, then fitted by
a Lightning trainer on its datamodule (or, for a dataset stage, run with `trainer.predict` over its data's training
prompts: each predicted item is one example of the written jsonl). Nothing here knows what a stage is for: warm-up,
teacher, reward model, main and control are entries of `stages:` (schema in `stages.py`, cache keys in `cache.py`).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from posttrain.pipeline import outputs
from posttrain.pipeline.cache import stage_dir, stage_key, stage_trainer_config
from posttrain.pipeline.report import history_rows, report
from posttrain.pipeline.stages import Stage, parse_stages, resolved
from posttrain.utils.config import check


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
    OmegaConf.register_new_resolver("merge", merge_configs, replace=True)


def merge_configs(*configs):
    """`${merge:${method},{recycle:false}}`: the first config, resolved, with the later ones merged over it (so a
    control stage is the main method plus a few changes, and command-line overrides of `method.*` reach it)."""
    return OmegaConf.merge(*(resolved(c) if isinstance(c, DictConfig) else c for c in configs))


@dataclass
class StageResult:
    stage: Stage
    key: str  # the cache key (also computed for stages that are not cached: later keys include it)
    directory: str
    rows: list[dict]
    output: object  # the trained network, or the dataset file's path
    module: L.LightningModule | None = None  # None when the result came from the cache
    trainer: L.Trainer | None = None
    datamodule: L.LightningDataModule | None = None


def train(cfg: DictConfig) -> dict:
    """Runs every stage; returns the rows, each stage's StageResult (`stages`) and the `main` stage's (else the last
    stage's) module, trainer and datamodule."""
    register_resolvers()
    pipeline = Pipeline(cfg)
    rows = []
    for stage in pipeline.stages:
        rows += pipeline.run(stage).rows
    report(cfg, rows)
    results = pipeline.results
    last = results.get("main") or results[pipeline.stages[-1].key]
    return {"rows": rows, "stages": results, "module": last.module, "trainer": last.trainer,
            "datamodule": last.datamodule}


@dataclass
class Pipeline:
    cfg: DictConfig
    stages: list[Stage] = field(init=False)
    results: dict[str, StageResult] = field(default_factory=dict)
    datamodules: dict[str, L.LightningDataModule] = field(default_factory=dict)  # resolved config -> instance

    def __post_init__(self):
        self.stages = parse_stages(self.cfg)
        self.by_key = {stage.key: stage for stage in self.stages}
        self.initial_model, self.tokenizer = instantiate(self.cfg.model)  # the first fresh start; the tokenizer

    def run(self, stage: Stage) -> StageResult:
        data = self.data_config(stage)
        model_cfg = self.model_config(stage)
        key = stage_key(self.cfg, stage, data, model_cfg, {k: r.key for k, r in self.results.items()})
        directory = stage_dir(self.cfg, stage, key)
        rows = outputs.read_rows(directory) if stage.cache else None
        if rows is not None:
            result = StageResult(stage, key, directory, rows, self.load_output(stage, directory))
        else:
            result = self.fit(stage, key, directory, data)
        self.results[stage.key] = result
        if stage.save_dir and stage.output != "dataset" and (result.trainer is None or result.trainer.is_global_zero):
            outputs.save_stage_model(result.output, self.tokenizer, stage.save_dir)
        return result

    def fit(self, stage: Stage, key: str, directory: str, data: DictConfig) -> StageResult:
        """Trains (or, for a dataset stage, runs) the stage; writes its output and rows when it is cached."""
        L.seed_everything(self.cfg.seed, workers=True)  # each stage from the same seed, whatever ran (or hit) before
        datamodule = self.datamodule(data)
        inputs = {argument: self.results[source].output for argument, source in stage.method_inputs().items()}
        module = instantiate(stage.node.method, model=self.start_model(stage), tokenizer=self.tokenizer,
                             _convert_="all", **inputs)
        trainer = make_trainer(self.cfg, stage)
        if stage.output == "dataset":
            examples = gather(trainer, [e for batch in trainer.predict(module, datamodule=datamodule) for e in batch])
            output = os.path.join(directory, outputs.DATASET_FILE)
            if trainer.is_global_zero:
                outputs.write_dataset(examples, directory)
            trainer.strategy.barrier()
            rows = [{"run": stage.name, "dataset/examples": len(examples), **getattr(module, "dataset_metrics", {})}]
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=stage.ckpt_path)
            output, rows = module.model, history_rows(stage.name, module.eval_history)
            if stage.node.get("evaluate_on") is not None:
                rows.append(self.evaluate(stage, module, trainer))
        if stage.cache and trainer.is_global_zero:
            if stage.output != "dataset":
                outputs.save_stage_model(output, self.tokenizer, directory)
            outputs.write_rows(rows, directory)
        return StageResult(stage, key, directory, rows, output, module, trainer, datamodule)

    def evaluate(self, stage: Stage, module, trainer: L.Trainer) -> dict:
        """One validation of the fitted module on `evaluate_on`: a row labelled with the stage's name."""
        validator = instantiate(self.cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, precision=trainer.precision)
        validator.validate(module, datamodule=self.datamodule(stage.node.evaluate_on), verbose=False)
        return {"run": stage.name, **module.eval_history[-1], "step": trainer.global_step}

    # ---- what a stage starts from and reads ----------------------------------------------------------------------
    def data_config(self, stage: Stage) -> DictConfig:
        """The stage's data config (the top-level `data` by default) with its dataset inputs filled in."""
        for key, source in stage.data_inputs().items():
            OmegaConf.update(stage.node.data, key, self.results[source].output, force_add=True)
        return stage.node.data if stage.node.get("data") is not None else self.cfg.data

    def datamodule(self, data: DictConfig) -> L.LightningDataModule:
        """One instance per distinct resolved data config, shared by the stages that read it."""
        text = json.dumps(resolved(data), sort_keys=True, default=str)
        if text not in self.datamodules:
            self.datamodules[text] = instantiate(data, tokenizer=self.tokenizer)
        return self.datamodules[text]

    def model_config(self, stage: Stage) -> DictConfig:
        """The model config the stage's network was first built from (followed through `start`)."""
        if stage.start != "model":
            return self.model_config(self.by_key[stage.start])
        return stage.node.get("model") or self.cfg.model

    def start_model(self, stage: Stage):
        """A fresh model (`start: model`), or the start stage's output: a copy while a later stage still needs it."""
        if stage.start != "model":
            source = self.results[stage.start].output
            return copy.deepcopy(source) if self.needed_after(stage, stage.start) else source
        if stage.node.get("model") is None:
            model, self.initial_model = self.initial_model, None
            return model if model is not None else instantiate(self.cfg.model)[0]
        model, tokenizer = instantiate(stage.node.model)
        check(len(tokenizer) == len(self.tokenizer), f"{stage.where}.model",
              f"its vocabulary ({len(tokenizer)}) differs from the model's ({len(self.tokenizer)}); the models of "
              f"one run share the tokenizer")
        return model

    def needed_after(self, stage: Stage, source: str) -> bool:
        later = self.stages[self.stages.index(stage) + 1:]
        return any(source in other.depends_on() for other in later)

    def load_output(self, stage: Stage, directory: str):
        if stage.output == "dataset":
            return os.path.join(directory, outputs.DATASET_FILE)
        return outputs.load_stage_model(directory, self.model_config(stage))


def make_trainer(cfg: DictConfig, stage: Stage) -> L.Trainer:
    """The stage's trainer: checkpoints in checkpoints/<stage>, logs named <stage>; callbacks that need a logger
    (LearningRateMonitor) are left out when there is none (logger=none)."""
    loggers = [instantiate(logger_cfg, name=stage.key) for logger_cfg in (cfg.get("logger") or {}).values()]
    callbacks = []
    for callback_cfg in (cfg.get("callbacks") or {}).values():
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
