"""AIDSAFE's dataset stages (Kumarage et al., ACL 2025 Findings, arXiv 2505.21784): nothing is trained here.

- `DeliberationModule` writes policy-embedded CoT data for the training queries of its data with the agent
  pipeline of `posttrain/aidsafe/deliberation.py` (or the single-agent baseline), one record per query in the
  published AIDSAFE schema (prompt, refined_thoughts, response, deliberation_log) plus what training and inspection
  use; finished batches are appended to a progress file, so a killed run resumes where it stopped.
- `PreferencePairsModule` writes DPO pairs from the stage's start model (the AIDSAFE SFT model): belief-augmented
  (the ear-whisperer's search, `posttrain/aidsafe/beliefs.py`) or standard sampling (two samples ranked by the
  violation scorer).
- `SafetyScoreModule` writes a model's greedy completions of the held-out queries and reports the safety metrics
  (for stages, such as DPO, whose own validation reads preference pairs).
"""
from __future__ import annotations

import hashlib
import json
import os
from statistics import mean

import torch

from lightning_modules.base import PostTrainModule
from posttrain.agents import build_agent
from posttrain.aidsafe import scorers
from posttrain.aidsafe.beliefs import search_beliefs
from posttrain.aidsafe.deliberation import Item, Settings, deliberate, zero_shot
from posttrain.aidsafe.evaluator import judge
from posttrain.aidsafe.judge import ChatJudge, RuleScorer
from posttrain.aidsafe.prompts import DELIBERATE
from posttrain.aidsafe.world import DEFAULT_POLICIES, PolicyBook, parse_completion, sft_target
from posttrain.generation import generate
from posttrain.processors.text import left_pad
from posttrain.utils.config import check, check_choice
from posttrain.utils.jsonl import read_complete_rows


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DeliberationModule(PostTrainModule):
    """Args:
        agent: the chat model of every role (a ChatModel or an `agent` config: conf/agent/).
        policies: the policy text files (null: the built-in five, posttrain/aidsafe/policies/).
        mode: `aidsafe` (decomposition, deliberation, refinement) | `single` (one zero-shot pass: LLM_ZS).
        budget: B, the most deliberation rounds.
        refine: run the refiner (false: the data is T_K, r_K).
        quality_budgets: also measure the data after these smaller budgets (<= budget), refined and raw.
        max_new_tokens, temperature: of every agent call.
        seed: of the agents' sampling.
        progress_dir: where finished batches are appended (null: no resumption).
    """

    def __init__(self, model, tokenizer, agent, policies=None, mode: str = "aidsafe", budget: int = 4,
                 refine: bool = True, quality_budgets=(0, 1, 2, 4), max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0, progress_dir: str | None = None, optimizer=None,
                 scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check_choice(mode, ("aidsafe", "single"), "method.mode")
        check(budget >= 0, "method.budget", f"must be >= 0, got {budget}")
        quality_budgets = tuple(sorted({int(b) for b in quality_budgets}))
        check(all(0 <= b <= budget for b in quality_budgets), "method.quality_budgets",
              f"must lie in [0, method.budget={budget}], got {list(quality_budgets)}")
        self.agent = build_agent(agent, key="agent")
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key="method.policies")
        self.mode = mode
        self.settings = Settings(budget, refine, quality_budgets, max_new_tokens, temperature, seed)
        self.progress_dir = progress_dir
        self.records: list[dict] = []
        self.resumed = 0  # batches read back from the progress file
        self.dataset_metrics: dict[str, float] = {}

    # ---- resumption ---------------------------------------------------------------------------------------------
    def progress_path(self) -> str | None:
        if not self.progress_dir:
            return None
        key = fingerprint({"mode": self.mode, "settings": vars(self.settings), "policies": self.book.text,
                           "agent": self.agent.describe()})
        return os.path.join(self.progress_dir, f"{key}.jsonl")

    def on_predict_start(self) -> None:
        self.records, self.resumed, self.done = [], 0, {}
        path = self.progress_path()
        if path:  # a line cut by a kill is incomplete JSON: that batch is redone
            self.done = {entry["batch"]: entry["records"] for entry in read_complete_rows(path)}

    def predict_step(self, batch, batch_idx) -> list[dict]:
        queries = [e["prompt"] for e in batch["examples"]]
        key = fingerprint(queries)
        if key in self.done:
            self.resumed += 1
            records = self.done[key]
        else:
            run = deliberate if self.mode == "aidsafe" else zero_shot
            items = run(self.agent, self.book.text, queries, self.settings)
            records = [self.record(item) for item in items]
            self.save_progress(key, records)
        self.records += records
        return records

    def save_progress(self, key: str, records: list[dict]) -> None:
        path = self.progress_path()
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"batch": key, "records": records}, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    # ---- records ------------------------------------------------------------------------------------------------
    def record(self, item: Item) -> dict:
        """One query's row: the AIDSAFE schema's four columns, then the SFT target and what inspection needs."""
        budget = self.settings.budget
        thoughts, response = item.refined[budget]
        quality = {}
        for b in sorted({budget, *self.settings.quality_budgets}):
            raw = item.states[min(b, len(item.states) - 1)][0]
            quality[str(b)] = {"refined": vars(scorers.score_cot(self.book, item.prompt, item.refined[b][0])),
                               "raw": vars(scorers.score_cot(self.book, item.prompt, raw))}
        return {"prompt": item.prompt, "refined_thoughts": "\n".join(thoughts), "response": response,
                "deliberation_log": json.dumps(item.log, ensure_ascii=False),
                "sft_target": sft_target(thoughts, response), "intents": json.dumps(item.intents),
                "rounds": len(item.states) - 1, "stop_reason": item.stop_reason, "errors": item.errors,
                "deliberation_calls": sum(entry["stage"] == DELIBERATE for entry in item.log),
                "dropped_by_refiner": item.dropped_by_refiner, "quality": json.dumps(quality)}

    def on_predict_epoch_end(self) -> None:
        if not self.records:
            return
        quality = [json.loads(r["quality"]) for r in self.records]
        final = str(self.settings.budget)
        metrics = {}
        for b in self.settings.quality_budgets:
            metrics[f"b{b}/faithfulness"] = mean(q[str(b)]["refined"]["faithfulness"] for q in quality)
            metrics[f"b{b}/faithfulness_raw"] = mean(q[str(b)]["raw"]["faithfulness"] for q in quality)
        for name in ("faithfulness", "redundancy", "deceptive_rate"):
            metrics[f"data/{name}"] = mean(q[final]["refined"][name] for q in quality)
            metrics[f"data/{name}_raw"] = mean(q[final]["raw"][name] for q in quality)
        # rounds: the editing rounds kept (the agreeing round adds no state); calls: every deliberation reply
        metrics["data/rounds"] = mean(r["rounds"] for r in self.records)
        metrics["data/deliberation_calls"] = mean(r.get("deliberation_calls", 0) for r in self.records)
        metrics["data/errors"] = mean(r["errors"] for r in self.records)
        metrics["data/resumed_batches"] = float(self.resumed)
        self.dataset_metrics = metrics


class CompletionMixin:
    """Greedy or sampled completions of query texts by the stage's model (prompts encoded by its data's
    processor)."""

    def complete(self, texts: list[str], temperature: float = 0.0, num_samples: int = 1, seed: int = 0) -> list[str]:
        processor = self.trainer.datamodule.processor
        batch = left_pad([processor.prompt(t) for t in texts], self.tokenizer.pad_token_id)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = generate(self.model, batch["prompt_input_ids"].to(self.device),
                       batch["prompt_attention_mask"].to(self.device), max_new_tokens=self.max_new_tokens,
                       eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                       temperature=temperature, num_samples=num_samples, generator=generator)
        return self.tokenizer.batch_decode(out.token_lists(), skip_special_tokens=True)


class PreferencePairsModule(CompletionMixin, PostTrainModule):
    """Args:
        mode: `belief` (y⁺: the model's greedy completion of q; y⁻: its most violating completion of b ⊕ q over
            the ear-whisperer's candidate beliefs) | `sampling` (two samples of q at `temperature`, ranked).
        agent: the ear-whisperer (belief mode).
        judge: the violation scorer: null is the synthetic world's rule (`scorers.violation`); an agent config
            (conf/agent/, e.g. an endpoint serving ShieldGemma) makes that chat model the judge (`judge.py`).
        iterations, candidates, keep: J rounds of C candidate beliefs, the K best shown in context.
        harmful_only: pairs only for queries with a harmful intent (where the violation scorer can tell).
        keep_ties: keep the pairs tied on both scores (`pairs/tied_kept`), e.g. for a random model whose pairs all
            tie, so that the DPO stages still have data.
    A pair's two completions are ranked by violation (lower: chosen), ties by the world's CoT faithfulness (higher:
    chosen; rule scorer only). A pair tied on both is dropped (`pairs/tied_dropped`: it has no preference), as is
    a belief pair whose y⁻ ranks above y⁺ (`pairs/inverted_dropped`) and one the judge could not score
    (`pairs/unjudged_dropped`).
    """

    def __init__(self, model, tokenizer, mode: str = "belief", agent=None, judge=None, policies=None,
                 iterations: int = 3, candidates: int = 4, keep: int = 3, max_new_tokens: int = 96,
                 temperature: float = 1.0, harmful_only: bool = True, keep_ties: bool = False, seed: int = 0,
                 optimizer=None, scheduler=None, evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        check_choice(mode, ("belief", "sampling"), "method.mode")
        check(iterations >= 1 and candidates >= 1 and keep >= 1, "method.iterations",
              "iterations, candidates and keep must be >= 1")
        self.agent = build_agent(agent, key="agent") if mode == "belief" else None
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key="method.policies")
        self.rule_based = judge is None
        self.violation = RuleScorer(self.book) if judge is None else ChatJudge(
            build_agent(judge, key="method.judge"), self.book.text)
        self.mode, self.iterations, self.candidates, self.keep = mode, iterations, candidates, keep
        self.keep_ties = keep_ties
        self.max_new_tokens, self.temperature, self.harmful_only, self.seed = (max_new_tokens, temperature,
                                                                               harmful_only, seed)
        self.pairs: list[dict] = []
        self.dataset_metrics: dict[str, float] = {}

    def on_predict_start(self) -> None:
        self.pairs, self.dropped, self.whisperer_errors = [], {"tied": 0, "inverted": 0, "unjudged": 0}, 0
        self.tied_kept = 0

    def predict_step(self, batch, batch_idx) -> list[dict]:
        queries = [e["prompt"] for e in batch["examples"]]
        if self.harmful_only:
            queries = [q for q in queries if any(self.book.harmful(i) for i in self.book.intents_in(q))]
        if not queries:
            return []
        seed = self.seed * 1_000_003 + batch_idx
        if self.mode == "belief":
            first = self.complete(queries)
            found = search_beliefs(self.agent, self.complete, self.violation, queries, iterations=self.iterations,
                                   candidates=self.candidates, keep=self.keep, seed=seed)
            self.whisperer_errors += found.errors
            # a query no candidate was judged on (every ear-whisperer reply or verdict unusable) gets a tie
            second = [r if v >= 0 else c for c, r, v in zip(first, found.rejected, found.violations)]
            beliefs = found.beliefs
        else:
            samples = self.complete(queries, temperature=self.temperature, num_samples=2, seed=seed)
            first, second, beliefs = samples[0::2], samples[1::2], [""] * len(queries)
        pairs = [p for p in map(self.pair, queries, first, second, beliefs, self.violation(queries, first),
                                self.violation(queries, second)) if p is not None]
        self.pairs += pairs
        return pairs

    def faithfulness(self, query: str, completion: str) -> float:
        return scorers.score_cot(self.book, query, parse_completion(completion)[0]).faithfulness

    def pair(self, query: str, first: str, second: str, belief: str, v_first, v_second) -> dict | None:
        """The ranked pair of two completions (belief mode: `first` is y⁺, `second` y⁻), or None when dropped."""
        if v_first is None or v_second is None:
            self.dropped["unjudged"] += 1
            return None
        f_first, f_second = self.faithfulness(query, first), self.faithfulness(query, second)
        rank_first = (v_first, -f_first if self.rule_based else 0.0)
        rank_second = (v_second, -f_second if self.rule_based else 0.0)
        if rank_first == rank_second:
            if not self.keep_ties:
                self.dropped["tied"] += 1
                return None
            self.tied_kept += 1
        if rank_second < rank_first:
            if self.mode == "belief":
                self.dropped["inverted"] += 1
                return None
            first, second, v_first, v_second, f_first, f_second = second, first, v_second, v_first, f_second, f_first
        return {"prompt": query, "chosen": first, "rejected": second, "belief": belief,
                "chosen_violation": v_first, "rejected_violation": v_second,
                "chosen_faithfulness": f_first, "rejected_faithfulness": f_second}

    def on_predict_epoch_end(self) -> None:
        pairs = self.pairs
        self.dataset_metrics = {"pairs/kept": float(len(pairs)), "pairs/judge_errors": float(self.violation.errors),
                                "pairs/whisperer_errors": float(self.whisperer_errors),
                                "pairs/tied_kept": float(self.tied_kept),
                                **{f"pairs/{k}_dropped": float(v) for k, v in self.dropped.items()}}
        if pairs:
            self.dataset_metrics.update({
                "pairs/faithfulness_gap": mean(p["chosen_faithfulness"] - p["rejected_faithfulness"] for p in pairs),
                "pairs/violation_gap": mean(p["rejected_violation"] - p["chosen_violation"] for p in pairs)})


class SafetyScoreModule(CompletionMixin, PostTrainModule):
    """Greedy completions of the queries of its data (`data.task.predict_on_eval: true`: the held-out splits),
    judged as `SafetyEvaluator` does: `<split>/safe_rate`, `<split>/over_refusal`, `<split>/accuracy`,
    `<split>/faithfulness`."""

    def __init__(self, model, tokenizer, policies=None, max_new_tokens: int = 96, optimizer=None, scheduler=None,
                 evaluator=None):
        super().__init__(model, tokenizer, optimizer, scheduler, evaluator)
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key="method.policies")
        self.max_new_tokens = max_new_tokens
        self.dataset_metrics: dict[str, float] = {}

    def on_predict_start(self) -> None:
        self.verdicts: dict[str, list[float]] = {}

    def predict_step(self, batch, batch_idx) -> list[dict]:
        examples = batch["examples"]
        completions = self.complete([e["prompt"] for e in examples])
        rows = []
        for example, completion in zip(examples, completions):
            verdict = judge(self.book, example["prompt"], completion)
            split = example.get("split", "train")
            for name, value in verdict.items():
                self.verdicts.setdefault(f"{split}/{name}", []).append(value)
            rows.append({"prompt": example["prompt"], "completion": completion, "split": split, **verdict})
        return rows

    def on_predict_epoch_end(self) -> None:
        self.dataset_metrics = {name: mean(values) for name, values in self.verdicts.items()}
