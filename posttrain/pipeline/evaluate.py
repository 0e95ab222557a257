"""evaluate(cfg): one evaluation of a saved model or a Lightning checkpoint, without training (`python eval.py`).

It reads the same config as `train.py`. The evaluated network is built from `model` (a fresh tiny model, or a saved
directory: `model=hf model.name_or_path=DIR`, or `model.name_or_path=DIR` with the tiny builder; a reward model's
directory with its value head), then `ckpt_path`, when set, loads a Lightning checkpoint of the evaluated
stage over it. The stage's own method (`stages.main` unless `eval_stage` names another) is built as in training, on
the stage's start (an earlier stage's output comes from the cache, trained first if it is not there), so the frozen
copies it makes of the start (DPO's reference) are those of the training run; a saved directory's weights then go
into the method's model only (without one or a checkpoint, a stage that starts from an earlier stage evaluates that
start). Of the earlier stages only the start and those whose outputs the method takes as inputs (a judge, a
teacher) are run or loaded. The method evaluates on the stage's `evaluate_on` (else its data) with every held-out
batch, so the metrics are those of the training run's row. The row is printed in the results table and written to
results.json.
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
from posttrain.pipeline.stages import DATASETS
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
    check(stage.output not in DATASETS, "eval_stage", f"stage {key!r} writes a dataset; it has no model to evaluate")
    check(ckpt_path is None or os.path.exists(ckpt_path), "ckpt_path", f"{ckpt_path!r} does not exist")
    data = stage.node.get("evaluate_on") or planned.data
    sources = [s for s in stage.depends_on() if s not in stage.data_inputs().values() or data is planned.data]
    needed = dependencies(by_key, sources)
    pipeline = Pipeline(cfg, [p for p in steps if p.stage.key in needed or p is planned])
    for source in pipeline.stages[:-1]:
        pipeline.run(by_key[source.key])
    inputs = {argument: pipeline.results[source].output for argument, source in stage.method_inputs().items()}
    module = instantiate(stage.node.method, model=pipeline.start_model(stage), tokenizer=pipeline.tokenizer,
                         _convert_="all", **inputs)
    if stage.start != "model" and cfg.model.get("name_or_path"):
        evaluated = pipeline.fresh_model()  # the `model` config: the saved directory
        lm(module.model).load_state_dict(evaluated.state_dict())  # the frozen copies built on the start stay
    load_value_head(module.model, cfg.model.get("name_or_path"))
    # every held-out batch, as the training run's evaluation (a cached stage fits with limit_val_batches: 0)
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, precision=stage_trainer_config(cfg, stage).precision)
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


def lm(network):
    """The language model inside the method's network (a reward model's method wraps it in a `ValueModel`)."""
    return network.backbone if isinstance(network, ValueModel) else network


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
