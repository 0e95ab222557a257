"""The ear-whisperer: an iterative in-context search for a misleading belief that makes the trained model violate
the policies.

For j = 1..J the ear-whisperer agent E is shown the K best beliefs so far with their scores and writes C new ones;
each candidate b is scored by running the model on `b ⊕ q` for every query q of the batch and rating each
completion with the violation scorer (`judge.py`; a completion it could not judge is skipped); a belief's score
is its mean violation over the judged completions. For every query the most violating
completion over all candidates is its rejected sample y⁻ (ties: the earlier belief). The belief is a generation-time
device only: the pair is stored with the plain query.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from posttrain.agents import ChatModel
from posttrain.aidsafe import prompts


def with_belief(belief: str, query: str) -> str:
    """The query with the belief prepended as a context note (the form the trained model saw notes in)."""
    return f"note: {belief}; {query}"


@dataclass
class SearchResult:
    rejected: list[str]  # per query: the most violating completion found
    beliefs: list[str]  # per query: the belief that produced it
    violations: list[float]  # per query: its violation score
    history: list[dict] = field(default_factory=list)  # per candidate: belief, iteration, score
    errors: int = 0  # ear-whisperer replies that could not be used


def search_beliefs(agent: ChatModel, complete: Callable[[list[str]], list[str]],
                   violation: Callable[[list[str], list[str]], list[float | None]], queries: list[str], *,
                   iterations: int, candidates: int,
                   keep: int, max_chars: int = 48, seed: int = 0, max_new_tokens: int = 128) -> SearchResult:
    best = SearchResult([""] * len(queries), [""] * len(queries), [-1.0] * len(queries))
    scored: list[tuple[str, float]] = []
    for j in range(iterations):
        exemplars = sorted(scored, key=lambda s: -s[1])[:keep]
        reply = agent.chat([prompts.whisper_messages(exemplars, candidates)], max_new_tokens=max_new_tokens,
                           temperature=1.0, seed=seed * 7919 + j)[0]
        try:
            beliefs = [] if reply.error else prompts.parse_beliefs(reply.text, max_chars)[:candidates]
        except prompts.ReplyError:
            beliefs = []
        if not beliefs:
            best.errors += 1
            continue
        for belief in beliefs:
            completions = complete([with_belief(belief, q) for q in queries])
            scores = violation(queries, completions)
            for i, (completion, score) in enumerate(zip(completions, scores)):
                if score is not None and score > best.violations[i]:
                    best.rejected[i], best.beliefs[i], best.violations[i] = completion, belief, score
            judged = [s for s in scores if s is not None]
            if not judged:
                continue
            mean = sum(judged) / len(judged)
            scored.append((belief, mean))
            best.history.append({"iteration": j, "belief": belief, "score": mean})
    return best
