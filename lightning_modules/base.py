"""Plumbing every method shares: an optimizer over every trainable parameter the method owns, the schedule, frozen
copies (reference, opponent, teacher, reward model) kept out of the optimizer, the gradient and, when the run can
rebuild them, the checkpoint; a pluggable evaluator; metric logging. No training logic lives here."""
from __future__ import annotations

import contextlib
import copy

import lightning as L
from torch import nn

from posttrain.evaluators import GenerationEvaluator
from posttrain.models import memory, sharding
from posttrain.optim import build_optimizer, build_scheduler, plain_spec
from posttrain.utils.config import check


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode whose parameters require no gradient (what `PostTrainModule.add_frozen`
    registers; usable alone, e.g. in a benchmark)."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class PostTrainModule(L.LightningModule):
    """Holds `model` (the trainable policy) and `tokenizer`; subclasses write `training_step`.

    Args:
        optimizer: `{_target_: torch.optim.AdamW, lr, weight_decay, ...}` (or the partial Hydra made of it, with
            `_partial_: true`); the module passes the parameters: every parameter it owns that requires a gradient
            (the policy, a value head, a learned log Z, ...), never a frozen copy (`posttrain.optim.build_optimizer`).
        scheduler: `{_target_: posttrain.optim.warmup_schedule, decay, warmup_ratio, min_lr_ratio}` or any
            scheduler target; called with the optimizer (and `period` = `schedule_period()` when it takes one).
        evaluator: scores the held-out splits (`posttrain.evaluators`); None = `GenerationEvaluator()` judged by the
            evaluated data's `is_correct`. A method without generation evaluation overrides the validation hooks.
    A subclass that sets `record_start_evaluation` keeps the sanity-check validation of a fresh run (the start model)
    in `eval_history` as epoch -1; it needs `trainer.num_sanity_val_steps=-1` to cover every batch.
    """

    record_start_evaluation = False
    # FSDP2 (trainer=fsdp): a method whose every forward of the policy outside generation is made by all processes
    # together (the same count, the same order) sets this; its policy is then sharded in `configure_model`
    shardable = False

    def __init__(self, model, tokenizer, optimizer=None, scheduler=None, evaluator=None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.evaluator = evaluator if evaluator is not None else GenerationEvaluator()
        self.frozen: dict[str, bool] = {}  # name of each frozen submodule -> rebuildable (left out of checkpoints)
        self.eval_history: list[dict] = []  # one entry per completed validation, kept in the checkpoint

    # ---- frozen copies ------------------------------------------------------------------------------------------
    def add_frozen(self, name: str, module: nn.Module, rebuildable: bool = False) -> nn.Module:
        """Registers `module` as the frozen submodule `name` (e.g. π_ref, an opponent, a teacher, a reward model):
        in eval mode whatever `train()` is called on this module, no parameter requires a gradient (so Lightning's
        DDP leaves them out of gradient sync: its reducer only holds parameters that require one), never in the
        optimizer; `rebuildable` ones (the run rebuilds them from the model or its cached stages) are also left out
        of checkpoints and put back from the live module when one is loaded. Returns the module."""
        module.eval().requires_grad_(False)
        setattr(self, name, module)
        self.frozen[name] = rebuildable
        return module

    def train(self, mode: bool = True):
        super().train(mode)
        for name in getattr(self, "frozen", {}):
            getattr(self, name).eval()
        return self

    def on_fit_start(self) -> None:
        # A model from `from_pretrained` (a checkpoint, a cached stage) arrives in eval mode, and Lightning keeps
        # each submodule's mode: without this its dropout would stay off for the whole fit.
        self.train()
        self.fit_loggers = list(self.trainer.loggers)  # an evaluation after the fit (evaluate_on) logs media there

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the module that requires a gradient, outside the frozen copies, each once."""
        frozen = {id(p) for name in self.frozen for p in getattr(self, name).parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    # ---- sharding (FSDP2) -----------------------------------------------------------------------------------------
    def sharded_strategy(self) -> bool:
        """Whether the fit shards (Lightning's ModelParallelStrategy, `trainer=fsdp`); a method that cannot is an
        error naming `trainer`."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return False
        check(self.shardable, "trainer", f"{type(self).__name__} does not shard (trainer=fsdp): its policy's "
              f"forwards are not made by every process together, it trains more than one network, or it copies the "
              f"policy's weights; use trainer=ddp (FSDP: SFT, DPO, SPIN, RFT, GRPO, NFT, SPARK)")
        return True

    def configure_model(self) -> None:
        """Under `trainer=fsdp`, fully_shard the policy's blocks and root over the data-parallel mesh. The frozen
        copies (π_ref, ...) are not sharded: each process holds them whole (they are read, never trained, and their
        forwards need no collective). Checkpoints are Lightning's distributed ones (a folder per checkpoint), with
        the frozen copies in them: its loader reads back every key the module has."""
        if not self.sharded_strategy() or sharding.is_sharded(self.model):
            return
        sharding.shard(self.model, self.device_mesh["data_parallel"])

    def on_validation_start(self) -> None:
        self.gathered_policy = contextlib.ExitStack()  # generation inside validation runs on whole parameters
        self.gathered_policy.enter_context(sharding.gathered(self.model))

    def on_validation_end(self) -> None:
        self.gathered_policy.close()

    # ---- optimisation -------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups: one with every trainable parameter. A method with per-network settings
        (e.g. PPO's critic learning rate) splits them, and must still cover every one (`configure_optimizers`)."""
        return [{"params": self.trainable_parameters()}]

    def configure_optimizers(self):
        groups = self.parameter_groups()
        grouped = {id(p) for group in groups for p in group["params"]}
        names = {id(p): n for n, p in self.named_parameters()}
        missing = [names[id(p)] for p in self.trainable_parameters() if id(p) not in grouped]
        check(not missing, "parameter_groups", f"trainable parameters outside every optimizer group: {missing}")
        optimizer = build_optimizer(groups, self.optimizer_spec)
        scheduler = build_scheduler(optimizer, self.schedule_period(), self.scheduler_spec)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def schedule_period(self) -> int:
        """Steps after which the learning-rate schedule restarts: the whole run unless a method says otherwise."""
        return int(self.trainer.estimated_stepping_batches)

    def log_metrics(self, split: str, metrics: dict, batch_size: int, sync_dist: bool | None = None) -> None:
        """Logs `metrics` as `<split>/<name>`; averaged over processes outside "train" unless `sync_dist` says
        otherwise (false for values already gathered from every process, e.g. `online.log_gathered`)."""
        sync = split != "train" if sync_dist is None else sync_dist
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, batch_size=batch_size, sync_dist=sync,
                     prog_bar=name in ("loss", "accuracy"))

    # ---- evaluation -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        shards = self.trainer.world_size if self.sharded_strategy() else 1
        memory.check_fits(self, self.trainer.strategy.root_device, {id(p) for p in self.model.parameters()}, shards)
        datamodule = self.trainer.datamodule
        self.evaluator.setup(self.eval_splits(), self.tokenizer, getattr(datamodule, "is_correct", None))
        keep_start = getattr(self.evaluator, "set_start_model", None)  # an evaluator that also judges with the start
        if keep_start is not None:
            keep_start(self.model)

    def eval_splits(self) -> tuple[str, ...]:
        """The held-out splits, in the order of the validation dataloaders."""
        return tuple(getattr(self.trainer.datamodule, "eval_splits", ()))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.eval_splits()[dataloader_idx]
        self.evaluator.update(self.model, batch, split, seed=batch_idx * 1009 + dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.record_evaluation(self.evaluator.compute())
        self.log_evaluation_media()

    def log_evaluation_media(self) -> None:
        """An evaluator with `log_media(loggers, step)` (image grids) writes to the fit's loggers, also from the
        separate validation of `evaluate_on` after the fit (which has none), at the last training step."""
        log_media = getattr(self.evaluator, "log_media", None)
        if log_media is None or self.trainer.sanity_checking:
            return
        loggers = self.trainer.loggers or getattr(self, "fit_loggers", [])
        log_media(loggers, max(self.global_step, getattr(self, "fitted_steps", 0)))

    def on_fit_end(self) -> None:
        self.fitted_steps = self.global_step

    def record_evaluation(self, results: dict) -> None:
        """Logs `results` ({"<split>/<metric>": value}) and appends them, with `progress_info()`, to
        `eval_history`; the sanity-check validation of a fresh run is kept as the start row (epoch -1) when the
        method asks for it."""
        entry = {"epoch": self.current_epoch, "step": self.global_step, **self.progress_info()}
        for name, value in results.items():
            self.log(name, value, prog_bar=name.endswith("/accuracy"))
            entry[name] = float(value)
        if not self.trainer.sanity_checking:
            self.eval_history.append(entry)
        elif self.record_start_evaluation and self.global_step == 0 and not self.eval_history:
            self.eval_history.append({**entry, "epoch": -1})

    def progress_info(self) -> dict:
        """Extra fields for each evaluation record (e.g. the SPIN iteration)."""
        return {}

    # ---- checkpoint -------------------------------------------------------------------------------------------
    def rebuilt_prefixes(self) -> tuple[str, ...]:
        if sharding.is_sharded(self.model):  # a distributed checkpoint must hold every key (`configure_model`)
            return ()
        return tuple(f"{name}." for name, rebuildable in self.frozen.items() if rebuildable)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["posttrain"] = {"eval_history": self.eval_history, **self.extra_state()}
        hyper = checkpoint.get("hyper_parameters", {})
        for key in ("optimizer", "scheduler"):
            if key in hyper:
                hyper[key] = plain_spec(hyper[key])
        prefixes, weights = self.rebuilt_prefixes(), checkpoint.get("state_dict", {})
        for key in [k for k in weights if prefixes and k.startswith(prefixes)]:
            del weights[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        prefixes = self.rebuilt_prefixes()
        if prefixes:
            weights = checkpoint.setdefault("state_dict", {})
            for key, value in self.state_dict().items():
                if key.startswith(prefixes):
                    weights.setdefault(key, value)
        state = checkpoint.get("posttrain", {})
        self.eval_history = list(state.get("eval_history", []))
        self.load_extra_state(state)
        mark_finished_epoch(checkpoint)

    def extra_state(self) -> dict:
        """Outer-loop state a method keeps in the checkpoint beside the weights."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def mark_finished_epoch(checkpoint: dict) -> None:
    """Records an epoch-end checkpoint's epoch as completed in its loop state, so a resumed fit starts the next epoch.

    Lightning (2.6) saves the epoch-end checkpoint before it counts the epoch as completed, and, when
    `trainer.max_steps` is set, resumes such a checkpoint as if inside that epoch: it trains one extra batch there
    (batch_idx = the epoch's length, from a fresh iterator) and then skips the last epoch. Marking the epoch
    completed and its batch count reset (what Lightning does itself without max_steps) resumes with the same
    batches, steps and epochs as an uninterrupted run. Mid-epoch checkpoints are left as they are."""
    fit = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not epochs or not batches or not batches.get("is_last_batch"):
        return
    done = batches["current"]
    if len(set(done.values())) != 1:  # the last batch itself not finished
        return
    for part in ("total", "current"):
        progress = epochs[part]
        if not progress["ready"] == progress["started"] == progress["processed"] == progress["completed"] + 1:
            return
    for part in ("total", "current"):
        epochs[part]["completed"] += 1
    batches["current"] = {key: 0 for key in done}
    batches["is_last_batch"] = False
