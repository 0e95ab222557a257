"""Cache keys: a stage's output is reused when everything it depends on, fully resolved, is the same.

The key hashes the stage's method, data, evaluation data, output kind, its own callbacks (e.g. a stop at a target
accuracy), its own model (start: model; nothing with start: none) or the key of the stage it starts from
(recursively), the keys of its input stages, the trainer it runs (the top-level `trainer` with its overrides;
settings that only decide logging and progress display are left out, and for a dataset stage, which only predicts,
the settings that only shape a fit), the stage's own callbacks (when it has any),
the settings of the validation that scores `evaluate_on` (`VALIDATION_SETTINGS` of `validator_config`) and the seed.
Every interpolation is resolved first, so `${method.optimizer}` and `${seed}` hash as their values.
"""
from __future__ import annotations

import hashlib
import json
import os

from omegaconf import DictConfig, OmegaConf

from posttrain.pipeline.stages import DATASETS, FRESH, Stage, resolved

# Trainer arguments that never change what a stage learns or records.
DISPLAY_ONLY = ("default_root_dir", "enable_progress_bar", "enable_model_summary", "log_every_n_steps",
                "enable_checkpointing", "logger", "callbacks")
# Arguments of the end-of-fit validation trainer that change the `evaluate_on` row.
VALIDATION_SETTINGS = ("limit_val_batches", "precision")
# Arguments that only shape a fit: a dataset stage runs `trainer.predict`, so they stay out of its key (training the
# later stages longer must not collect or generate its data again).
FIT_ONLY = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "check_val_every_n_epoch",
            "val_check_interval", "limit_train_batches", "limit_val_batches", "num_sanity_val_steps",
            "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
            "reload_dataloaders_every_n_epochs")


def stage_trainer_config(cfg: DictConfig, stage: Stage) -> DictConfig:
    """The top-level `trainer` with the stage's `trainer` overrides, resolved (it leaves the config tree)."""
    return OmegaConf.merge(resolved(cfg.trainer), resolved(stage.node.get("trainer")) or {})


def validator_config(cfg: DictConfig, stage: Stage) -> DictConfig:
    """The trainer of the stage's `evaluate_on` validation: the top-level `trainer` (a stage's own overrides may turn
    validation off during its fit, as `conf/stage/cached.yaml` does) at the stage's precision."""
    precision = stage_trainer_config(cfg, stage).get("precision")
    return OmegaConf.merge(resolved(cfg.trainer), {"precision": precision})


def stage_key(cfg: DictConfig, stage: Stage, data: DictConfig, model: DictConfig | None, keys: dict[str, str]) -> str:
    """The hash of everything `stage`'s output depends on; `keys` holds the keys of the stages that ran before it."""
    trainer = resolved(stage_trainer_config(cfg, stage))
    left_out = DISPLAY_ONLY + (FIT_ONLY if stage.output in DATASETS else ())
    validator = validator_config(cfg, stage) if stage.node.get("evaluate_on") is not None else None
    content = {
        "method": resolved(stage.node.method),
        "data": resolved(data),
        "evaluate_on": resolved(stage.node.get("evaluate_on")),
        "output": stage.output,
        "model": resolved(model) if stage.start == "model" else None,
        "start": keys[stage.start] if stage.start not in FRESH else None,
        "inputs": {argument: keys[source] for argument, source in sorted(stage.inputs.items())},
        "trainer": {k: v for k, v in trainer.items() if k not in left_out},
        "validation": {k: validator.get(k) for k in VALIDATION_SETTINGS} if validator is not None else None,
        "seed": cfg.seed,
    }
    if stage.node.get("callbacks"):  # a stage's own callbacks can change what it learns (only then in the key, so
        content["callbacks"] = resolved(stage.node.callbacks)  # the keys of stages without any stay as they were)
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stage_dir(cfg: DictConfig, stage: Stage, key: str) -> str:
    """Where a stage writes its outputs: paths.cache_dir/<stage>-<key> when cached, else the run's stages/<stage>."""
    if stage.cache:
        return os.path.join(cfg.paths.cache_dir, f"{stage.key}-{key}")
    return os.path.join(cfg.paths.output_dir, "stages", stage.key)
