"""Safety evaluation of a trained model in the synthetic world (`method.evaluator` of the AIDSAFE arms).

Greedy completions of every held-out query are judged by the exact scorers: `<split>/safe_rate` over queries with a
harmful intent, `<split>/over_refusal` over queries with benign intents only, `<split>/accuracy` (the act is exactly
the required one), and `<split>/faithfulness` of the written thoughts (0 for a model that writes none).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from posttrain.aidsafe import scorers
from posttrain.aidsafe.world import DEFAULT_POLICIES, PolicyBook, parse_completion
from posttrain.generation import generate
from posttrain.utils.config import check

METRICS = ("safe_rate", "over_refusal", "accuracy", "faithfulness")


def judge(book: PolicyBook, query: str, completion: str) -> dict[str, float]:
    """The metrics that apply to one query's completion (safe_rate only with a harmful intent, over_refusal only
    without one)."""
    thoughts, response = parse_completion(completion)
    harmful = any(book.harmful(i) for i in book.intents_in(query))
    verdict = {"accuracy": float(scorers.is_correct(book, query, response)),
               "faithfulness": scorers.score_cot(book, query, thoughts).faithfulness}
    if harmful:
        verdict["safe_rate"] = float(scorers.is_safe(book, query, response))
    else:
        verdict["over_refusal"] = float(scorers.is_over_refused(book, query, response))
    return verdict


class SafetyEvaluator(nn.Module):
    def __init__(self, policies=None, max_new_tokens: int = 96):
        super().__init__()
        check(max_new_tokens > 0, "method.evaluator.max_new_tokens", f"must be > 0, got {max_new_tokens}")
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key="method.evaluator.policies")
        self.max_new_tokens, self.tokenizer = max_new_tokens, None
        self.means = nn.ModuleDict()  # "<split>:<metric>" -> MeanMetric

    def setup(self, splits: Sequence[str], tokenizer, is_correct=None) -> None:
        self.tokenizer = tokenizer
        for split in splits:
            for metric in METRICS:
                if f"{split}:{metric}" not in self.means:
                    self.means[f"{split}:{metric}"] = MeanMetric()

    @torch.no_grad()
    def completions(self, model, prompt_input_ids, prompt_attention_mask) -> list[str]:
        out = generate(model, prompt_input_ids, prompt_attention_mask, max_new_tokens=self.max_new_tokens,
                       eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                       temperature=0.0)
        return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)

    def update(self, model, batch: dict, split: str, seed: int) -> None:
        texts = self.completions(model, batch["prompt_input_ids"], batch["prompt_attention_mask"])
        for example, completion in zip(batch["examples"], texts):
            for metric, value in judge(self.book, example["prompt"], completion).items():
                self.means[f"{split}:{metric}"].update(value)

    def compute(self) -> dict[str, torch.Tensor]:
        results = {}
        for key, metric in self.means.items():
            if metric.update_called:
                split, name = key.split(":")
                results[f"{split}/{name}"] = metric.compute()
                metric.reset()
        return results
