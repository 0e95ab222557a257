"""Plumbing every method shares: optimizer and schedule from config, evaluation by greedy generation,
frozen copies of the model, metric logging. No training logic lives here."""
from __future__ import annotations

import copy

import lightning as L
import torch
from torch import nn

from posttrain.generation import generate
from torchmetrics import MeanMetric

from posttrain.metrics import ExactMatch
from posttrain.models.forward import label_logprobs, label_logprobs_and_entropy
from posttrain.optim import build_optimizer, build_scheduler
from posttrain.utils.config import check


def frozen_copy(model: nn.Module) -> nn.Module:
    """A detached copy in eval mode (no dropout) whose parameters never receive gradients or optimizer updates."""
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


class PostTrainModule(L.LightningModule):
    """Holds `model` (the trainable policy) and `tokenizer`; subclasses write `training_step`.

    Args:
        optimizer: {name, lr, weight_decay, ...} for posttrain.optim.build_optimizer.
        scheduler: {name, warmup_ratio, min_lr_ratio} for posttrain.optim.build_scheduler.
        evaluation: {max_new_tokens, batch_size, entropy, sampled_k, sampled_temperature}; held-out splits are
            scored by greedy decoding (`<split>/accuracy`) and the NLL of the reference responses; `entropy: true`
            also logs `<split>/entropy`, the mean predictive entropy (nats) over reference response positions (one
            (B, T, V) log-softmax: small vocabularies); `sampled_k` > 0 also scores `sampled_k` samples per problem
            at `sampled_temperature` (`<split>/accuracy_sampled`, avg@k): RL methods optimise the sampled pass rate,
            which greedy accuracy can miss.
    A subclass that sets `record_start_evaluation` keeps the sanity-check validation of a fresh run (the start model)
    in `eval_history` as epoch -1; it needs `trainer.num_sanity_val_steps=-1` to cover every batch.
    """

    record_start_evaluation = False
    # Frozen submodules a run rebuilds from its cached stages (e.g. π_ref, a reward model): left out of checkpoints
    # and put back from the live module when one is loaded.
    rebuilt_submodules: tuple[str, ...] = ()

    def __init__(self, model, tokenizer, optimizer: dict | None = None, scheduler: dict | None = None,
                 evaluation: dict | None = None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_cfg = dict(optimizer or {})
        self.scheduler_cfg = dict(scheduler or {})
        self.evaluation_cfg = {"max_new_tokens": 16, "entropy": False, "sampled_k": 0, "sampled_temperature": 1.0,
                               **(evaluation or {})}
        check(self.evaluation_cfg["sampled_k"] >= 0, "method.evaluation.sampled_k",
              f"must be >= 0, got {self.evaluation_cfg['sampled_k']}")
        check(self.evaluation_cfg["sampled_temperature"] > 0, "method.evaluation.sampled_temperature",
              f"must be > 0, got {self.evaluation_cfg['sampled_temperature']}")
        self.eval_accuracy = nn.ModuleDict()  # split -> ExactMatch of greedy completions
        self.eval_sampled = nn.ModuleDict()  # split -> ExactMatch of sampled completions (avg@k)
        self.eval_nll = nn.ModuleDict()  # split -> token-averaged NLL of the reference responses
        self.eval_entropy = nn.ModuleDict()  # split -> token-averaged predictive entropy (evaluation.entropy only)
        self.eval_history: list[dict] = []  # one entry per completed validation, kept in the checkpoint

    # ---- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, **self.optimizer_cfg)
        scheduler = build_scheduler(optimizer, self.schedule_period(), **self.scheduler_cfg)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def schedule_period(self) -> int:
        """Steps after which the learning-rate schedule restarts: the whole run unless a method says otherwise."""
        return int(self.trainer.estimated_stepping_batches)

    def log_metrics(self, split: str, metrics: dict, batch_size: int) -> None:
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, batch_size=batch_size, sync_dist=split != "train",
                     prog_bar=name in ("loss", "accuracy"))

    # ---- evaluation -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        splits = getattr(self.trainer.datamodule, "eval_splits", ())
        for split in splits:
            if split not in self.eval_accuracy:
                self.eval_accuracy[split] = ExactMatch()
                self.eval_nll[split] = MeanMetric()
                self.eval_entropy[split] = MeanMetric()
                if self.evaluation_cfg["sampled_k"] > 0:
                    self.eval_sampled[split] = ExactMatch()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        datamodule = self.trainer.datamodule
        split = datamodule.eval_splits[dataloader_idx]
        completions = self.greedy_completions(batch)
        correct = torch.tensor([datamodule.is_correct(e, c) for e, c in zip(batch["examples"], completions)])
        self.eval_accuracy[split].update(correct)
        if split in self.eval_sampled:
            k = self.evaluation_cfg["sampled_k"]
            completions = self.sampled_completions(batch, k, seed=batch_idx * 1009 + dataloader_idx)
            examples = [e for e in batch["examples"] for _ in range(k)]
            sampled = [datamodule.is_correct(e, c) for e, c in zip(examples, completions)]
            self.eval_sampled[split].update(torch.tensor(sampled))
        inputs = (self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        if self.evaluation_cfg["entropy"]:
            logps, entropy, mask = label_logprobs_and_entropy(*inputs)  # (B, T-1) each
        else:
            (logps, mask), entropy = label_logprobs(*inputs), None
        tokens = mask.sum().clamp(min=1)
        self.eval_nll[split].update(-(logps * mask).sum() / tokens, weight=tokens)
        if entropy is not None:
            self.eval_entropy[split].update(entropy.sum() / tokens, weight=tokens)

    def on_validation_epoch_end(self) -> None:
        entry = {"epoch": self.current_epoch, "step": self.global_step, **self.progress_info()}
        for split in self.eval_accuracy:
            if not self.eval_accuracy[split].update_called:
                continue
            metrics = [("accuracy", self.eval_accuracy[split]), ("nll", self.eval_nll[split])]
            if self.evaluation_cfg["entropy"]:
                metrics.append(("entropy", self.eval_entropy[split]))
            if split in self.eval_sampled:
                metrics.append(("accuracy_sampled", self.eval_sampled[split]))
            for name, metric in metrics:
                value = metric.compute()  # reduced over processes by torchmetrics
                self.log(f"{split}/{name}", value, prog_bar=name == "accuracy")
                entry[f"{split}/{name}"] = float(value)
                metric.reset()
        if not self.trainer.sanity_checking:
            self.eval_history.append(entry)
        elif self.record_start_evaluation and self.global_step == 0 and not self.eval_history:
            self.eval_history.append({**entry, "epoch": -1})

    def progress_info(self) -> dict:
        """Extra fields for each evaluation record (e.g. the SPIN iteration)."""
        return {}

    @torch.no_grad()
    def greedy_completions(self, batch) -> list[str]:
        out = generate(self.model, batch["prompt_input_ids"], batch["prompt_attention_mask"], temperature=0.0,
                       max_new_tokens=self.evaluation_cfg["max_new_tokens"], eos_token_id=self.tokenizer.eos_token_id,
                       pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)

    @torch.no_grad()
    def sampled_completions(self, batch, k: int, seed: int) -> list[str]:
        """k samples per prompt (rows i*k .. i*k+k-1) at the evaluation temperature. The generator is seeded by the
        batch's position only, so every evaluation of a run (and every method) draws with the same random numbers:
        differences between evaluations come from the model, not from the sampling noise."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = generate(self.model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                       temperature=self.evaluation_cfg["sampled_temperature"], num_samples=k, generator=generator,
                       max_new_tokens=self.evaluation_cfg["max_new_tokens"], eos_token_id=self.tokenizer.eos_token_id,
                       pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)

    # ---- checkpoint -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["posttrain"] = {"eval_history": self.eval_history, **self.extra_state()}
        prefixes = tuple(f"{name}." for name in self.rebuilt_submodules)
        weights = checkpoint.get("state_dict", {})
        for key in [k for k in weights if k.startswith(prefixes)]:
            del weights[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.rebuilt_submodules:
            prefixes = tuple(f"{name}." for name in self.rebuilt_submodules)
            weights = checkpoint.setdefault("state_dict", {})
            for key, value in self.state_dict().items():
                if key.startswith(prefixes):
                    weights.setdefault(key, value)
        state = checkpoint.get("posttrain", {})
        self.eval_history = list(state.get("eval_history", []))
        self.load_extra_state(state)

    def extra_state(self) -> dict:
        """Outer-loop state a method keeps in the checkpoint beside the weights."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
