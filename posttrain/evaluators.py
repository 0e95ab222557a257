"""Evaluators: objects a method is given (`method.evaluator`) that score its model on the held-out splits.

An evaluator is an `nn.Module` (its torchmetrics states move to the model's device and reduce across processes)
with four calls the base module makes: `setup(splits, tokenizer, is_correct)` once per fit/validate (`tokenizer`: the
module's, a tokenizer or, for a vision-language model, its processor, which has the same ids and `batch_decode`),
`update(model, batch, split, seed)` per held-out batch, and `compute()` at the end of a validation, which returns
`{"<split>/<metric>": value}` and resets. Image reward, episode success rate and the like are further evaluators
with the same calls.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from posttrain.generation import generate
from posttrain.metrics import ExactMatch
from posttrain.models.forward import label_logprobs, label_logprobs_and_entropy, sequence_logprobs
from posttrain.processors import pack
from posttrain.support import support_measures
from posttrain.utils.config import check


def write_image_grids(loggers, grids: dict[str, torch.Tensor], name: str, step: int) -> None:
    """`log_media`'s body: each split's (3, H, W) grid as `<split>/<name>` to every logger that takes images."""
    for logger in loggers:
        writer = getattr(logger, "experiment", None)
        if hasattr(writer, "add_image"):
            for split, grid in grids.items():
                writer.add_image(f"{split}/{name}", grid, global_step=step)

class GenerationEvaluator(nn.Module):
    """Accuracy of greedy completions (`<split>/accuracy`) and the NLL of the reference responses (`<split>/nll`).

    Args:
        reward: `reward(example, completion) -> Verdict` deciding correctness (e.g. the task's verifier); None: the
            evaluated data's own `is_correct(example, completion)`, given to `setup`.
        max_new_tokens: of every evaluation completion.
        entropy: also `<split>/entropy`, the mean predictive entropy (nats) over reference response positions (one
            (B, T, V) log-softmax: small vocabularies).
        sampled_k: > 0 also scores `sampled_k` samples per problem at `sampled_temperature`
            (`<split>/accuracy_sampled`, avg@k): RL methods optimise the sampled pass rate, which greedy accuracy
            can miss.
    """

    def __init__(self, reward: Callable | None = None, max_new_tokens: int = 16, entropy: bool = False,
                 sampled_k: int = 0, sampled_temperature: float = 1.0):
        super().__init__()
        check(max_new_tokens > 0, "method.evaluator.max_new_tokens", f"must be > 0, got {max_new_tokens}")
        check(sampled_k >= 0, "method.evaluator.sampled_k", f"must be >= 0, got {sampled_k}")
        check(sampled_temperature > 0, "method.evaluator.sampled_temperature",
              f"must be > 0, got {sampled_temperature}")
        self.reward, self.max_new_tokens, self.entropy = reward, max_new_tokens, entropy
        self.sampled_k, self.sampled_temperature = sampled_k, sampled_temperature
        self.tokenizer, self.is_correct_fallback = None, None
        self.accuracy = nn.ModuleDict()  # split -> ExactMatch of greedy completions
        self.sampled = nn.ModuleDict()  # split -> ExactMatch of sampled completions (avg@k)
        self.nll = nn.ModuleDict()  # split -> token-averaged NLL of the reference responses
        self.entropies = nn.ModuleDict()  # split -> token-averaged predictive entropy

    def setup(self, splits: Sequence[str], tokenizer, is_correct: Callable | None = None) -> None:
        self.tokenizer, self.is_correct_fallback = tokenizer, is_correct
        check(self.reward is not None or is_correct is not None, "method.evaluator.reward",
              "the evaluated data has no is_correct(example, completion); give the evaluator a reward")
        for split in splits:
            if split not in self.accuracy:
                self.accuracy[split], self.nll[split], self.entropies[split] = ExactMatch(), MeanMetric(), MeanMetric()
                if self.sampled_k > 0:
                    self.sampled[split] = ExactMatch()

    def correct(self, examples: Sequence[dict], completions: Sequence[str]) -> torch.Tensor:
        """(N,) bool: each completion judged by the reward, or by the data's own check without one."""
        if self.reward is not None:
            return torch.tensor([self.reward(e, c).correct for e, c in zip(examples, completions)], dtype=torch.bool)
        return torch.tensor([self.is_correct_fallback(e, c) for e, c in zip(examples, completions)], dtype=torch.bool)

    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        """Scores one held-out batch: SFT rows (input_ids, attention_mask, labels), left-padded prompts and the raw
        examples. `seed` fixes the sampled completions' noise (the batch's position), so every evaluation of a run,
        and every method, draws with the same random numbers: differences come from the model."""
        self.accuracy[split].update(self.correct(batch["examples"], self.greedy_completions(model, batch)))
        if split in self.sampled:
            completions = self.sampled_completions(model, batch, self.sampled_k, seed)
            examples = [e for e in batch["examples"] for _ in range(self.sampled_k)]
            self.sampled[split].update(self.correct(examples, completions))
        inputs = (model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        images = batch.get("image_inputs")
        if self.entropy:
            logps, entropy, mask = label_logprobs_and_entropy(*inputs, image_inputs=images)  # (B, T-1) each
        else:
            (logps, mask), entropy = label_logprobs(*inputs, image_inputs=images), None
        tokens = mask.sum().clamp(min=1)
        self.nll[split].update(-(logps * mask).sum() / tokens, weight=tokens)
        if entropy is not None:
            self.entropies[split].update(entropy.sum() / tokens, weight=tokens)

    def compute(self) -> dict[str, torch.Tensor]:
        """`<split>/<metric>` of every split that saw data in this validation (reduced over processes by
        torchmetrics); resets them."""
        results = {}
        for split in self.accuracy:
            if not self.accuracy[split].update_called:
                continue
            metrics = [("accuracy", self.accuracy[split]), ("nll", self.nll[split])]
            if self.entropy:
                metrics.append(("entropy", self.entropies[split]))
            if split in self.sampled:
                metrics.append(("accuracy_sampled", self.sampled[split]))
            for name, metric in metrics:
                results[f"{split}/{name}"] = metric.compute()
                metric.reset()
        return results

    @torch.no_grad()
    def greedy_completions(self, model, batch: dict) -> list[str]:
        return self.completions(model, batch, temperature=0.0)

    @torch.no_grad()
    def sampled_completions(self, model, batch: dict, k: int, seed: int) -> list[str]:
        """k samples per prompt (rows i*k .. i*k+k-1) at the evaluation temperature, from a generator seeded by
        `seed`."""
        device = batch["prompt_input_ids"].device
        generator = torch.Generator(device=device).manual_seed(seed)
        return self.completions(model, batch, temperature=self.sampled_temperature, num_samples=k,
                                generator=generator)

    def completions(self, model, batch: dict, **sampling) -> list[str]:
        """Completions of the batch's prompts (with their `image_inputs`, for a VLM), decoded."""
        out = generate(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                       max_new_tokens=self.max_new_tokens, eos_token_id=self.tokenizer.eos_token_id,
                       pad_token_id=self.tokenizer.pad_token_id, image_inputs=batch.get("image_inputs"), **sampling)
        return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)


class SupportEvaluator(GenerationEvaluator):
    """GenerationEvaluator plus exact measures of the model's answer distribution against a known data distribution.

    Examples that carry `support` ([[response, p_data(response|prompt)], ...], e.g.
    `datamodules.tasks.DecompositionTask`) are also scored by `posttrain.support.support_measures`: `<split>/valid`
    (the probability that a sample at temperature 1 is in the support), `<split>/tv` (total variation) and
    `<split>/kl` (KL(p_data ‖ p_θ), nats), each the mean over prompts, computed from one teacher-forced pass over
    every support string (no sampling noise). Data without `support` gets GenerationEvaluator's metrics only.

    Args (beyond GenerationEvaluator's):
        support_batch_size: rows (prompt, support string) per forward pass.
    """

    MEASURES = ("valid", "tv", "kl")

    def __init__(self, reward: Callable | None = None, max_new_tokens: int = 16, support_batch_size: int = 2048,
                 **kwargs):
        super().__init__(reward=reward, max_new_tokens=max_new_tokens, **kwargs)
        check(support_batch_size > 0, "method.evaluator.support_batch_size", f"must be > 0, got {support_batch_size}")
        self.support_batch_size = support_batch_size
        self.measures = nn.ModuleDict()  # "<split>/<measure>" -> MeanMetric over prompts

    def setup(self, splits: Sequence[str], tokenizer, is_correct: Callable | None = None) -> None:
        super().setup(splits, tokenizer, is_correct)
        for split in splits:
            for name in self.MEASURES:
                if f"{split}/{name}" not in self.measures:
                    self.measures[f"{split}/{name}"] = MeanMetric()

    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        super().update(model, batch, split, seed)
        examples = batch["examples"]
        if not all("support" in e for e in examples):
            return
        measures = support_measures(self.support_logprobs(model, batch), self.support_probs(examples))
        for name, values in measures.items():
            self.measures[f"{split}/{name}"].update(values.float())

    def support_probs(self, examples: Sequence[dict]) -> torch.Tensor:
        """(P, K) p_data of each example's support strings, zero-padded to the largest support K."""
        width = max(len(e["support"]) for e in examples)
        return torch.tensor([[p for _, p in e["support"]] + [0.0] * (width - len(e["support"])) for e in examples],
                            dtype=torch.float64)

    def support_logprobs(self, model, batch: dict) -> torch.Tensor:
        """(P, K) log p_θ(y_k | x_p) of each example's support strings (eos included), -inf on padding columns."""
        examples, tokenizer = batch["examples"], self.tokenizer
        ids, mask = batch["prompt_input_ids"].tolist(), batch["prompt_attention_mask"].tolist()
        prompts = [[t for t, m in zip(row, row_mask) if m] for row, row_mask in zip(ids, mask)]  # unpadded
        rows = [(i, k, prompts[i], tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
                for i, e in enumerate(examples) for k, (text, _) in enumerate(e["support"])]
        width = max(len(e["support"]) for e in examples)
        device = batch["prompt_input_ids"].device
        out = torch.full((len(examples), width), float("-inf"), dtype=torch.float64, device=device)  # (P, K)
        for start in range(0, len(rows), self.support_batch_size):
            chunk = rows[start:start + self.support_batch_size]
            packed = pack([r[2] for r in chunk], [r[3] for r in chunk], tokenizer.pad_token_id, max_length=10**6)
            logps = sequence_logprobs(model, {k: v.to(device) for k, v in packed.items()})  # (rows,)
            index = torch.tensor([[r[0], r[1]] for r in chunk], device=device)
            out[index[:, 0], index[:, 1]] = logps.double()
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        results = super().compute()
        for key, metric in self.measures.items():
            if metric.update_called:
                results[key] = metric.compute()
                metric.reset()
        return results
