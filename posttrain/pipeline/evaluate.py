"""evaluate(cfg): one evaluation of a saved model or a Lightning checkpoint, without training (`python eval.py`).

It reads the same config as `train.py`. The evaluated network is built from `model` (a fresh tiny model, or a saved
directory: `model=hf model.name_or_path=DIR`, or `model.name_or_path=DIR` with the tiny builder; a reward model's
directory with its value head), then `ckpt_path`, when set, loads a Lightning checkpoint of the evaluated
stage over it. The stage's own method (`stages.main` unless `eval_stage` names another) evaluates it on its data
(or `evaluate_on`), so the metrics are those the method logs during training; the earlier stages are not run, except
those whose outputs the method takes as inputs (a judge, a teacher), which come from the cache as in a training run
(trained first if they are not there). The row is printed in the results table and written to results.json.
"""
from __future__ import annotations

import os

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from posttrain.models.value_head import ValueModel
from posttrain.pipeline.cache import stage_trainer_config
from posttrain.pipeline.report import report
from posttrain.pipeline.run import Pipeline, plan, register_resolvers
from posttrain.utils.config import check


def evaluate(cfg: DictConfig) -> dict:
    """Evaluates the configured model (or checkpoint); returns {"rows", "module", "trainer"}."""
    register_resolvers()
    steps = plan(cfg)
    key = cfg.eval_stage
    by_key = {p.stage.key: p for p in steps}
    check(key in by_key, "eval_stage", f"no stage {key!r}; the stages are {sorted(by_key)}")
    planned, ckpt_path = by_key[key], cfg.get("ckpt_path")
    stage = planned.stage
    check(stage.output != "dataset", "eval_stage", f"stage {key!r} writes a dataset; it has no model to evaluate")
    check(ckpt_path is None or os.path.exists(ckpt_path), "ckpt_path", f"{ckpt_path!r} does not exist")
    needed = dependencies(by_key, stage.method_inputs().values())
    pipeline = Pipeline(cfg, [p for p in steps if p.stage.key in needed])
    for source in pipeline.stages:
        pipeline.run(by_key[source.key])
    inputs = {argument: pipeline.results[source].output for argument, source in stage.method_inputs().items()}
    module = instantiate(stage.node.method, model=pipeline.fresh_model(), tokenizer=pipeline.tokenizer,
                         _convert_="all", **inputs)
    load_value_head(module.model, cfg.model.get("name_or_path"))
    trainer = instantiate(stage_trainer_config(cfg, stage), callbacks=[], logger=False, enable_checkpointing=False,
                          enable_progress_bar=False)
    data = stage.node.get("evaluate_on") or planned.data
    trainer.validate(module, datamodule=pipeline.datamodule(data), ckpt_path=ckpt_path, verbose=False)
    step = checkpoint_step(ckpt_path)
    rows = [{**module.eval_history[-1], "run": f"{stage.name} (evaluated)", "step": step}]
    report(cfg, rows)
    return {"rows": rows, "module": module, "trainer": trainer}


def dependencies(by_key: dict, keys) -> set[str]:
    """The given stages and every stage they start from or take inputs from, recursively."""
    found, todo = set(), list(keys)
    while todo:
        key = todo.pop()
        if key not in found:
            found.add(key)
            todo += by_key[key].stage.depends_on()
    return found


def load_value_head(network, directory: str | None) -> None:
    """A reward model's method wraps the LM in a `ValueModel` itself: the head saved beside a reward model's
    directory goes into it (from a fresh model or a checkpoint, the method's own head is evaluated). A directory
    without one, given to a reward model's method, is an error."""
    if not isinstance(network, ValueModel) or not directory:
        return
    path = os.path.join(directory, ValueModel.HEAD_FILE)
    check(os.path.isfile(path), "model.name_or_path",
          f"the method evaluates a reward model, and {directory!r} has no {ValueModel.HEAD_FILE} (a reward model "
          f"stage's saved directory has one)")
    network.head.load_state_dict(torch.load(path, map_location="cpu"))


def checkpoint_step(ckpt_path: str | None) -> int | str:
    """The checkpoint's global step (the training step the evaluated weights are from); "" without one."""
    if ckpt_path is None or os.path.isdir(ckpt_path):
        return ""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    return int(state.get("global_step", 0))
