"""LLaVA-Critic-R1's evaluation: the model as a critic, as a policy, and as its own judge at test time.

Held-out batches of critic items (examples with "responses") give, greedily decoded:

    critic_accuracy   the boxed verdict equals the label (pairs appear in both orders, so labels are balanced)
    critic_format     the whole output is <think>…</think>…\\boxed{…}
    position_bias     P(verdict "1") − P(verdict "2"): 0 for a judge without position preference
    critic_invalid    no readable verdict

Batches of questions (no "responses") give `policy_accuracy` and `policy_format` of the greedy answer, asked
directly with no candidates, and, on the first `self_critique_questions` questions, test-time selection among the
first N of `max(self_critique_n)` sampled answers:

    selfcritique@N    pick by a pairwise knockout (N − 1 judge calls, `posttrain.critic.knockout`), the model
                      judging its own samples with the training prompt; one knockout of all max(N) samples
                      decides every power-of-two N on the way (the first N samples' own bracket)
    basecritique@N    the same knockout judged by the start model (the arm's base; `judge_with_start`)
    majority@N        the most frequent boxed answer
    pass@N            any of the N is right (the ceiling of every selection rule)

Every sampled draw is seeded by the batch position, so every arm and judge sees the same random numbers.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from posttrain.critic import CriticPrompt, judged_choice, knockout, majority_vote
from posttrain.generation import generate
from posttrain.processors import left_pad, make_processor
from posttrain.rewards.parsing import normalize_answer, parse_boxed
from posttrain.rewards.think_boxed import follows_format
from posttrain.utils.config import check


class CriticEvaluator(nn.Module):
    """Args:
        reward: `reward(example, completion) -> Verdict` deciding correctness (`reward=think_boxed`); the format
            metrics check the outputs themselves (`posttrain.rewards.think_boxed.follows_format`).
        style, judge_template, format_suffix: the judging prompt, as the data's (`posttrain.critic.CriticPrompt`).
        prompt_template, max_length: how the data wraps and bounds a prompt (`data.prompt_template`, a judging
            prompt's length limit).
        max_new_tokens: of every answer and verdict.
        self_critique_n: the N of the selection metrics; self_critique_questions: questions they are computed on
            (0 = none); temperature: of the sampled answers.
        judge_with_start: also judge with the model the fit started from (kept when `set_start_model` is called).
        judge_batch_size: judging prompts per generate call.
    """

    def __init__(self, reward: Callable, style: str = "short", judge_template: str | None = None,
                 format_suffix: str | None = None, prompt_template: str = "{prompt}", max_length: int = 512,
                 max_new_tokens: int = 32, self_critique_n: Sequence[int] = (1, 2, 4, 8, 16),
                 self_critique_questions: int = 32, temperature: float = 1.0, judge_with_start: bool = True,
                 judge_batch_size: int = 256):
        super().__init__()
        check(max_new_tokens > 0, "method.evaluator.max_new_tokens", f"must be > 0, got {max_new_tokens}")
        check(all(n >= 1 for n in self_critique_n) and len(self_critique_n) > 0, "method.evaluator.self_critique_n",
              f"must be a list of N >= 1, got {list(self_critique_n)}")
        check(self_critique_questions >= 0, "method.evaluator.self_critique_questions",
              f"must be >= 0, got {self_critique_questions}")
        check(temperature > 0, "method.evaluator.temperature", f"must be > 0, got {temperature}")
        self.reward, self.max_new_tokens, self.temperature = reward, max_new_tokens, temperature
        self.prompt = CriticPrompt.of(style, judge_template, format_suffix, key="method.evaluator.style")
        self.prompt_template, self.max_length, self.judge_batch_size = prompt_template, max_length, judge_batch_size
        self.self_critique_n, self.questions = sorted(set(self_critique_n)), self_critique_questions
        self.judge_with_start = judge_with_start
        self.metrics = nn.ModuleDict()  # "<split>__<name>" -> MeanMetric
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # follows the module's device
        self._start: list[nn.Module] = []  # the start model, outside the module tree (not in checkpoints)
        self.processor = None

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    # ---- the evaluator calls ------------------------------------------------------------------------------------
    def setup(self, splits: Sequence[str], tokenizer, is_correct: Callable | None = None) -> None:
        self.processor = make_processor(tokenizer, max_length=self.max_length, prompt_template=self.prompt_template)

    def set_start_model(self, model: nn.Module) -> None:
        """Keeps a frozen copy of the first model it is given (the fit's start: the base of this arm)."""
        if self.judge_with_start and not self._start:
            self._start.append(copy.deepcopy(model).eval().requires_grad_(False))

    @torch.no_grad()
    def update(self, model, batch: dict, split: str, seed: int) -> None:
        examples = batch["examples"]
        greedy = self.completions(model, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                  batch.get("image_inputs"))
        verdicts = [self.reward(e, c) for e, c in zip(examples, greedy)]
        if "responses" in examples[0]:
            choices = [judged_choice(c) for c in greedy]
            self.add(split, "critic_accuracy", [v.correct for v in verdicts])
            self.add(split, "critic_format", [follows_format(c) for c in greedy])
            self.add(split, "says_1", [c == "1" for c in choices])
            self.add(split, "says_2", [c == "2" for c in choices])
            self.add(split, "critic_invalid", [c is None for c in choices])
            return
        self.add(split, "policy_accuracy", [v.correct for v in verdicts])
        self.add(split, "policy_format", [follows_format(c) for c in greedy])
        chosen = [i for i, e in enumerate(examples) if e.get("index", i) < self.questions]
        if chosen:
            self.self_critique(model, batch, chosen, split, seed)

    def compute(self) -> dict[str, torch.Tensor]:
        results = {}
        for key, metric in self.metrics.items():
            if metric.update_called:
                split, name = key.split("__")
                results[f"{split}/{name}"] = metric.compute()
            metric.reset()
        for split in {k.split("/")[0] for k in results}:
            if f"{split}/says_1" in results:
                results[f"{split}/position_bias"] = results.pop(f"{split}/says_1") - results.pop(f"{split}/says_2")
        return results

    # ---- test-time selection -------------------------------------------------------------------------------------
    def self_critique(self, model, batch: dict, chosen: list[int], split: str, seed: int) -> None:
        examples = [batch["examples"][i] for i in chosen]
        index = torch.tensor(chosen, device=batch["prompt_input_ids"].device)
        images = batch.get("image_inputs")
        n_max = self.self_critique_n[-1]
        generator = torch.Generator(device=index.device).manual_seed(seed)
        texts = self.completions(model, batch["prompt_input_ids"][index], batch["prompt_attention_mask"][index],
                                 images.select(index) if images is not None else None, num_samples=n_max,
                                 temperature=self.temperature, generator=generator)
        samples = [texts[q * n_max:(q + 1) * n_max] for q in range(len(examples))]
        right = [[self.reward(e, s).correct for s in group] for e, group in zip(examples, samples)]
        answers = [[_answer(s) for s in group] for group in samples]
        judges = {"selfcritique": model, **({"basecritique": self._start[0].to(index.device)} if self._start else {})}
        for n in self.self_critique_n:
            self.add(split, f"pass@{n}", [any(r[:n]) for r in right])
            self.add(split, f"majority@{n}", [r[majority_vote(a[:n])] for r, a in zip(right, answers)])
        for name, judge in judges.items():
            _, _, leaders = knockout(samples, self.judge_fn(judge, examples))  # N_max − 1 calls per question
            for n in self.self_critique_n:
                if n & (n - 1) == 0:  # a power of two: the first n samples' own knockout, decided on the way
                    winners = leaders[n.bit_length() - 1]
                else:
                    winners = knockout([s[:n] for s in samples], self.judge_fn(judge, examples))[0]
                self.add(split, f"{name}@{n}", [r[w] for r, w in zip(right, winners)])

    def judge_fn(self, judge, examples: Sequence[dict]):
        """`pairs -> verdicts` for `knockout`: each pair asked of `judge` with the question's image, greedily."""
        def ask(pairs: list[tuple[int, str, str]]) -> list[str | None]:
            verdicts = []
            for start in range(0, len(pairs), self.judge_batch_size):
                items = [{"prompt": self.prompt.judge(examples[q]["question"], a, b),
                          **({"image": examples[q]["image"]} if "image" in examples[q] else {})}
                         for q, a, b in pairs[start:start + self.judge_batch_size]]
                prompts, images = self.processor.encode_prompts(items)
                padded = left_pad(prompts, self.processor.pad_id)
                device = next(judge.parameters()).device
                texts = self.completions(judge, padded["prompt_input_ids"].to(device),
                                         padded["prompt_attention_mask"].to(device),
                                         images.to(device) if images is not None else None)
                verdicts += [judged_choice(t) for t in texts]
            return verdicts
        return ask

    # ---- helpers ----------------------------------------------------------------------------------------------
    def completions(self, model, ids, mask, images, temperature: float = 0.0, **sampling) -> list[str]:
        out = generate(model, ids, mask, max_new_tokens=self.max_new_tokens, eos_token_id=self.processor.eos_id,
                       pad_token_id=self.processor.pad_id, temperature=temperature, image_inputs=images, **sampling)
        return self.processor.decode(out.token_lists())

    def add(self, split: str, name: str, values: Sequence[bool]) -> None:
        key = f"{split}__{name}"
        if key not in self.metrics:  # created on first use, on the device of the evaluator's other states
            self.metrics[key] = MeanMetric().to(self.device)
        self.metrics[key].update(torch.tensor(values, dtype=torch.float32, device=self.metrics[key].device))


def _answer(completion: str) -> str | None:
    boxed = parse_boxed(completion)
    return normalize_answer(boxed) if boxed is not None else None
