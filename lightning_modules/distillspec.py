"""DistillSpec: distil the draft of speculative decoding from its target (Zhou et al., ICLR 2024).

`model` is the draft (the student, trained); `teacher` is the target (frozen, out of the optimizer). Each training
step draws its data by the paper's generalised KD step (Algorithm A.2): with probability λ1 = `fixed_fraction` the
fixed dataset's batch, otherwise the batch's prompts answered by the live draft (probability λ2 =
`student_fraction`, on-policy) or by the target, sampled at `generation.temperature` (1.0 in the paper) without
gradient. The loss is the token-averaged divergence of `distillspec_loss` at the paper's T_p = T_q = 1.

Validation adds to the draft's accuracy and NLL: `<split>/expected_acceptance` = 1 - TVD(p, q) averaged over the
reference responses, and, per decoding mode, the measured speculative decoding of held-out prompts with the target:
`spec/<mode>_acceptance_rate` (α), `spec/<mode>_tokens_per_call_g<γ>` (τ at each γ of `speculative.gamma`),
`spec/sample_expected_acceptance` (Σ min(p, q) at the same positions), `spec/<mode>_speedup_g<γ>` (wall-clock time
of target-only decoding over speculative decoding, all run in turn in the same process, medians of the repeats) and
`spec/<mode>_speedup` with `spec/<mode>_best_gamma`, the best γ's.
"""
from __future__ import annotations

import statistics
import time

import torch
from torchmetrics import MeanMetric

from lightning_modules.base import PostTrainModule
from posttrain.generation import generate, speculative_generate
from posttrain.losses.distillspec import DIVERGENCES, distillspec_loss, distillspec_reduce, jsd_endpoint
from posttrain.models.builders import check_fusable_head
from posttrain.models.forward import IGNORE_INDEX, fused_head, head_weight, hidden_states
from posttrain.ops.lm_head_rows import lm_head_divergence
from posttrain.processors import left_pad, pack
from posttrain.utils.config import check, check_choice, with_defaults

SPEC_MODES = ("greedy", "sample", "lenient")
GENERATION_DEFAULTS = {"temperature": 1.0, "max_new_tokens": 16}
SPECULATIVE_DEFAULTS = {"gamma": 4, "modes": ["greedy", "sample"], "temperature": 1.0, "lenience": 1.0,
                        "num_prompts": 32, "batch_size": 1, "repeats": 3, "max_new_tokens": 16}


class DistillSpecModule(PostTrainModule):
    """Args:
        teacher: the target model (same vocabulary); built by the run's `teacher` stage.
        divergence: forward_kl | reverse_kl | jsd | tvd.
        beta: the mixture weight β of JSD[β] (0.5 = the paper's "JSD"; 0 and 1 mean forward and reverse KL).
        temperature: T of both distributions in the loss (the paper: 1.0).
        fixed_fraction: λ1, the probability that a step trains on the fixed dataset.
        student_fraction: λ2, among generated batches the probability that the draft (rather than the target)
            generates. λ1 = 0, λ2 = 1 is the paper's recommended on-policy setting; λ1 = 1 is supervised KD.
        generation: {temperature, max_new_tokens} of the generated training data.
        speculative: {gamma (one or a list: the best is reported), modes, temperature, lenience, num_prompts,
            batch_size, repeats, max_new_tokens} of the speculative decoding measured at each validation on the
            first held-out split.
        evaluate_at_start: also record the start draft's validation (the sanity check) as the "(start)" row.
        seed: seeds the data-source draws and the sampling, per step, so a resumed run draws the same data.
    """

    def __init__(self, model, tokenizer, teacher=None, divergence: str = "forward_kl", beta: float = 0.5,
                 temperature: float = 1.0, fixed_fraction: float = 0.0, student_fraction: float = 1.0,
                 generation: dict | None = None, speculative: dict | None = None, evaluate_at_start: bool = True,
                 seed: int = 0, optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check(teacher is not None, "teacher", "DistillSpec needs a target model: set the run's `teacher` stage")
        check_choice(divergence, DIVERGENCES, "method.divergence")
        check(0 <= beta <= 1, "method.beta", f"must be in [0, 1], got {beta}")
        check(temperature > 0, "method.temperature", f"must be > 0, got {temperature}")
        check(0 <= fixed_fraction <= 1, "method.fixed_fraction", f"must be in [0, 1], got {fixed_fraction}")
        check(0 <= student_fraction <= 1, "method.student_fraction", f"must be in [0, 1], got {student_fraction}")
        check(teacher.config.vocab_size == model.config.vocab_size, "teacher",
              "the target and the draft must share the vocabulary")
        if fused_head(model):  # the target's logits are formed a block at a time too
            check_fusable_head(teacher, "model.fused_lm_head")
        self.generation_cfg = with_defaults(generation, GENERATION_DEFAULTS, "method.generation")
        check(self.generation_cfg["temperature"] >= 0, "method.generation.temperature", "must be >= 0")
        self.spec_cfg = with_defaults(speculative, SPECULATIVE_DEFAULTS, "method.speculative")
        gamma_list(self.spec_cfg["gamma"])
        for mode in self.spec_cfg["modes"]:
            check_choice(mode, SPEC_MODES, "method.speculative.modes")
        check(self.spec_cfg["repeats"] >= 1, "method.speculative.repeats", "must be >= 1")
        self.save_hyperparameters(ignore=["model", "tokenizer", "teacher", "evaluator"])
        self.add_frozen("teacher", teacher, rebuildable=True)  # rebuilt from the run's cached teacher stage
        self.divergence, self.beta, self.temperature = divergence, beta, temperature
        self.fixed_fraction, self.student_fraction, self.seed = fixed_fraction, student_fraction, seed
        self.record_start_evaluation = evaluate_at_start
        self.eval_acceptance = torch.nn.ModuleDict()  # split -> mean 1 - TVD over reference responses
        self.spec_metrics: dict = {}

    # ---- training ---------------------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(
            (self.seed * 1_000_003 + 7919 * (self.global_step + 1) + 104729 * self.global_rank) % 2**63)

    def training_step(self, batch, batch_idx):
        generator = self.step_generator()
        u1, u2 = torch.rand(2, generator=generator, device=self.device).tolist()
        source = "fixed" if u1 < self.fixed_fraction else ("student" if u2 < self.student_fraction else "teacher")
        if source != "fixed":
            batch = self.generated_batch(batch, self.model if source == "student" else self.teacher, generator)
        loss, metrics = self.distill_loss(batch, self.divergence, self.temperature)
        rows = batch["input_ids"].shape[0]
        self.log_metrics("train", {"loss": loss, **metrics, "on_policy": float(source == "student"),
                                   "teacher_data": float(source == "teacher")}, batch_size=rows)
        return loss

    def distill_loss(self, batch: dict, divergence: str, temperature: float) -> tuple[torch.Tensor, dict]:
        """`distillspec_loss` over the batch's response tokens. With `model.fused_lm_head=true` both models stop at
        their final hidden states and the divergence runs a block of tokens at a time through both heads
        (`lm_head_divergence`), so neither model's (B, T, V) logits exist."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        mask = batch["labels"][:, 1:] != IGNORE_INDEX  # (B, T-1)
        if not fused_head(self.model):
            student = self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1]  # (B, T-1, V)
            with torch.no_grad():
                teacher = self.teacher(input_ids=ids, attention_mask=attention,
                                       use_cache=False).logits[:, :-1]  # (B, T-1, V)
            return distillspec_loss(student, teacher, mask, divergence, self.beta, temperature)
        student = hidden_states(self.model, ids, attention)[:, :-1][mask]  # (N, H)
        with torch.no_grad():
            teacher = hidden_states(self.teacher, ids, attention)[:, :-1][mask]  # (N, H_t)
        weight, teacher_weight = head_weight(self.model, student.dtype), head_weight(self.teacher, teacher.dtype)

        def per_token(kind: str) -> torch.Tensor:
            return lm_head_divergence(student, weight, teacher, teacher_weight, kind, self.beta, temperature)  # (N,)

        return distillspec_reduce(per_token, mask, jsd_endpoint(divergence, self.beta))

    @torch.no_grad()
    def generated_batch(self, batch, generator_model, generator: torch.Generator) -> dict:
        """The batch's prompts with responses sampled from `generator_model` (no gradient), packed for training."""
        prompts = [ids[:plen] for ids, plen in zip(batch["input_ids"].tolist(), batch["prompt_lengths"].tolist())]
        encoder = self.trainer.datamodule.processor
        padded = left_pad(prompts, encoder.pad_id)
        cfg = self.generation_cfg
        out = generate(generator_model, padded["prompt_input_ids"].to(self.device),
                       padded["prompt_attention_mask"].to(self.device), max_new_tokens=cfg["max_new_tokens"],
                       temperature=cfg["temperature"], eos_token_id=encoder.eos_id, pad_token_id=encoder.pad_id,
                       generator=generator)
        packed = pack(prompts, out.token_lists(), encoder.pad_id, encoder.max_length)
        return {k: v.to(self.device) for k, v in packed.items()}

    # ---- evaluation -------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        for split in self.eval_splits():
            if split not in self.eval_acceptance:
                self.eval_acceptance[split] = MeanMetric()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        super().validation_step(batch, batch_idx, dataloader_idx)
        split = self.eval_splits()[dataloader_idx]
        _, metrics = self.distill_loss(batch, "tvd", self.spec_cfg["temperature"])
        self.eval_acceptance[split].update(metrics["expected_acceptance"], weight=metrics["tokens"])

    def on_validation_epoch_end(self) -> None:
        self.spec_metrics = {}
        for split, metric in self.eval_acceptance.items():
            if metric.update_called:
                self.spec_metrics[f"{split}/expected_acceptance"] = float(metric.compute())
                metric.reset()
        self.spec_metrics.update(self.measure_speculative())
        for name, value in self.spec_metrics.items():
            self.log(name, value)
        super().on_validation_epoch_end()  # records progress_info(), i.e. these metrics, in eval_history

    def progress_info(self) -> dict:
        return dict(self.spec_metrics)

    @torch.no_grad()
    def measure_speculative(self) -> dict:
        """Runs target-only decoding and speculative decoding with the draft at every γ, in turn within each repeat,
        on held-out prompts (so load from other processes hits them alike); medians of the repeats."""
        datamodule, cfg = self.trainer.datamodule, self.spec_cfg
        encoder = datamodule.processor
        examples = datamodule.splits[datamodule.eval_splits[0]][: cfg["num_prompts"]]
        prompts = [encoder.prompt(e["prompt"]) for e in examples]
        batches = [left_pad(prompts[i : i + cfg["batch_size"]], encoder.pad_id)
                   for i in range(0, len(prompts), cfg["batch_size"])]
        batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 17)
        common = {"max_new_tokens": cfg["max_new_tokens"], "eos_token_id": encoder.eos_id,
                  "pad_token_id": encoder.pad_id, "generator": generator}
        gammas = gamma_list(cfg["gamma"])
        metrics = {}
        for mode in cfg["modes"]:
            temperature = 0.0 if mode == "greedy" else cfg["temperature"]
            times = {g: [] for g in [0, *gammas]}  # 0: target-only
            totals = {g: torch.zeros(5, dtype=torch.float64) for g in gammas}
            for _ in range(cfg["repeats"]):
                start = time.perf_counter()
                for b in batches:
                    generate(self.teacher, b["prompt_input_ids"], b["prompt_attention_mask"], temperature=temperature,
                             **common)
                times[0].append(time.perf_counter() - start)
                for g in gammas:
                    start = time.perf_counter()
                    for b in batches:
                        out = speculative_generate(self.teacher, self.model, b["prompt_input_ids"],
                                                   b["prompt_attention_mask"], gamma=g, mode=mode,
                                                   temperature=max(temperature, 1e-6), lenience=cfg["lenience"],
                                                   **common)
                        totals[g] += torch.tensor([out.accepted.sum(), out.decided.sum(), out.lengths.sum(),
                                                   out.target_calls.sum(), out.expected_acceptance.sum()],
                                                  dtype=torch.float64)
                    times[g].append(time.perf_counter() - start)
            metrics.update(speculative_summary(mode, times, totals))
        return metrics


def gamma_list(gamma) -> list[int]:
    """`method.speculative.gamma` as a list: one block size or several (the best one is reported)."""
    gammas = [gamma] if isinstance(gamma, int) else list(gamma)
    check(len(gammas) > 0 and all(isinstance(g, int) and g >= 1 for g in gammas), "method.speculative.gamma",
          f"must be an integer >= 1 or a non-empty list of them, got {gamma}")
    return gammas


def speculative_summary(mode: str, times: dict, totals: dict) -> dict:
    """The `spec/<mode>_*` metrics from interleaved timings.

    Args:
        times: {0: target-only seconds per repeat, γ: speculative seconds per repeat}.
        totals: {γ: float64 (5,) sums of accepted, decided, emitted tokens, target calls, Σ min(p, q)}.
    Returns:
        per γ `tokens_per_call_g<γ>` (τ) and `speedup_g<γ>` (median target-only time / median speculative time);
        `acceptance_rate` (α) and, when sampling, `expected_acceptance` pooled over every γ; `speedup`,
        `tokens_per_call` and `best_gamma` at the γ with the largest speedup.
    """
    target = statistics.median(times[0])
    pooled = sum(totals.values())
    accepted, decided, _, _, expected = pooled.tolist()
    metrics = {f"spec/{mode}_acceptance_rate": accepted / max(decided, 1)}
    if mode != "greedy":
        metrics[f"spec/{mode}_expected_acceptance"] = expected / max(decided, 1)
    speedups = {}
    for g, total in totals.items():
        _, _, tokens, calls, _ = total.tolist()
        speedups[g] = target / statistics.median(times[g])
        metrics[f"spec/{mode}_tokens_per_call_g{g}"] = tokens / max(calls, 1)
        metrics[f"spec/{mode}_speedup_g{g}"] = speedups[g]
    best = max(speedups, key=speedups.get)
    metrics[f"spec/{mode}_tokens_per_call"] = metrics[f"spec/{mode}_tokens_per_call_g{best}"]
    metrics[f"spec/{mode}_speedup"] = speedups[best]
    metrics[f"spec/{mode}_best_gamma"] = float(best)
    return metrics
