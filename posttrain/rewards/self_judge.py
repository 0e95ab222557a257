"""The policy as its own judge and reflector (SPARK's evaluation and test-time self-reflection).

`SelfJudge` asks one causal LM, with the canonical templates of `posttrain.rewards.recycling`:
  - P(Y | "J1:<q><a>?"), renormalised over the two verdict tokens (`verdict_logprobs`);
  - P(A | "J2:<q>(A)<a>(B)<b>"), likewise over A/B;
  - a greedy revision of a wrong answer, "R:<q><a> fix" -> answer.
`self_reflection` is the test-time loop over any judge / reviser (a stub in the tests).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from posttrain.generation import eval_mode, generate
from posttrain.rewards import recycling
from posttrain.rewards.judges import encode_prompts, verdict_logprobs, verdict_token_ids


class SelfJudge:
    """Args:
        model: the policy (judging never changes it: no_grad, generation in eval mode).
        encoder: a TextProcessor (the data's processor).
        max_new_tokens: of a revision.
        batch_size: prompts per forward.
    """

    def __init__(self, model, encoder, max_new_tokens: int = 8, batch_size: int = 256):
        self.model, self.encoder = model, encoder
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        tokenizer = encoder.tokenizer
        self.yes_no = verdict_token_ids(tokenizer, recycling.VERDICTS[recycling.POINTWISE])
        self.a_b = verdict_token_ids(tokenizer, recycling.VERDICTS[recycling.PAIRWISE])

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _first_verdict(self, texts: Sequence[str], verdict_ids) -> torch.Tensor:
        out = []
        with eval_mode(self.model):
            for start in range(0, len(texts), self.batch_size):
                ids, mask = encode_prompts(self.encoder, texts[start:start + self.batch_size], self.device)
                out.append(verdict_logprobs(self.model, ids, mask, verdict_ids)[:, 0].exp())  # (b,)
        return torch.cat(out) if out else torch.zeros(0)  # (N,)

    def p_correct(self, questions: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """P(Y) of the pointwise verdict on each (question, answer): (N,)."""
        texts = [recycling.pointwise_prompt(q, a) for q, a in zip(questions, answers)]
        return self._first_verdict(texts, self.yes_no)

    def p_first(self, questions: Sequence[str], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """P(A) of the pairwise verdict with `first` in slot A: (N,)."""
        texts = [recycling.pairwise_prompt(q, a, b) for q, a, b in zip(questions, first, second)]
        return self._first_verdict(texts, self.a_b)

    @torch.no_grad()
    def revise(self, questions: Sequence[str], answers: Sequence[str]) -> list[str]:
        """The greedy answer to the answer-only reflection prompt of each (question, answer), stripped."""
        texts = [recycling.reflect_prompt(q, a) for q, a in zip(questions, answers)]
        out = []
        for start in range(0, len(texts), self.batch_size):
            ids, mask = encode_prompts(self.encoder, texts[start:start + self.batch_size], self.device)
            gen = generate(self.model, ids, mask, temperature=0.0, max_new_tokens=self.max_new_tokens,
                           eos_token_id=self.encoder.eos_id, pad_token_id=self.encoder.pad_id)
            out += [t.strip() for t in self.encoder.tokenizer.batch_decode(gen.token_lists(), skip_special_tokens=True)]
        return out


def self_reflection(questions: Sequence[str], answers: Sequence[str], judge: Callable, revise: Callable,
                    is_correct: Callable[[int, str], bool], rounds: int) -> list[list[bool]]:
    """Test-time self-reflection: each problem's correctness after each of `rounds` rounds of judge-then-revise.

    In each round, every answer not yet accepted is judged (`judge(questions, answers) -> P(correct)`, (N,)); it is
    accepted for good when P(correct) >= 0.5 (the judge's greedy verdict), otherwise replaced by
    `revise(questions, answers)` and judged again in the next round. `is_correct(i, answer)` scores problem i.
    Returns [correct at round 0 (the given answers), after round 1, ..., after round `rounds`], each (N,) bools.
    """
    current = list(answers)
    open_ = list(range(len(current)))
    history = [[is_correct(i, a) for i, a in enumerate(current)]]
    for _ in range(rounds):
        if open_:
            p = judge([questions[i] for i in open_], [current[i] for i in open_])
            rejected = [i for i, pi in zip(open_, p.tolist()) if pi < 0.5]
            if rejected:
                revised = revise([questions[i] for i in rejected], [current[i] for i in rejected])
                for i, answer in zip(rejected, revised):
                    current[i] = answer
            open_ = rejected
        history.append([is_correct(i, a) for i, a in enumerate(current)])
    return history


def balanced_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the correct-class and wrong-class recall (bools (N,)); NaN unless both classes are present, because
    a one-class recall would read as a balanced accuracy (an always-"Y" judge would score 1 on all-correct answers)."""
    if not (labels.any() and (~labels).any()):
        return float("nan")
    return sum((predicted[labels == c] == c).float().mean().item() for c in (True, False)) / 2
