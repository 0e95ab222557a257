"""The AIDSAFE pipeline over a batch of queries, each stage one batched call of the agent:

    0. intents I = M_intent(q)
    1. (T_0, r_0) = M_init(q, I, P)
    2. for k = 1..B: agent A_k (two agents, alternating) either declares the CoT complete — deliberation stops —
       or edits it: removes wrong thoughts, appends new ones Δ_k (T_k = T_{k-1} ⊕ Δ_k less the removed) and may
       revise the response; stop at the first completion or at k = B
    3. (T*, r*) = M_refine(q, P, T_{≤K}, r_K), where T_{≤K} is every thought of every round (T_K followed by the
       thoughts removed in earlier rounds) and the refiner may only delete: a thought it writes that is not one of
       T_{≤K} is dropped (`prompts.keep_only_given`)

Every call's reply, parse result and error is kept in the item's log. A reply that cannot be parsed is an error
of that step: a failed decomposition leaves no intents, a failed initial CoT an empty one, a failed deliberation
round leaves the CoT as it was (the round counts against the budget), a failed refinement keeps T_K and r_K.

`quality_budgets` also refines the state after each smaller budget b (the state at round min(b, K): deliberation
stops at the first completion whatever the budget, and round k draws the same noise under any budget), so one run
measures data quality for several budgets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from posttrain.agents import ChatModel
from posttrain.aidsafe import prompts
from posttrain.aidsafe.prompts import ReplyError


@dataclass
class Item:
    prompt: str
    intents: list = field(default_factory=list)
    states: list = field(default_factory=list)  # (thoughts, response) after the initial CoT and each round
    log: list = field(default_factory=list)
    stop_reason: str = "budget"
    refined: dict = field(default_factory=dict)  # budget -> (thoughts, response)
    errors: int = 0
    dropped_by_refiner: int = 0


@dataclass
class Settings:
    budget: int = 4
    refine: bool = True
    quality_budgets: tuple = ()
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0


def run_stage(agent: ChatModel, items: list[Item], conversations: list[list[dict]], stage: str, settings: Settings,
              seed: int, parse, **info) -> list[tuple[object, dict]]:
    """One batched call; each item's (parsed reply or None on error, its log entry), every step logged."""
    replies = agent.chat(conversations, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                         seed=seed)
    parsed = []
    for item, reply in zip(items, replies):
        result, error = None, reply.error
        if error is None:
            try:
                result = parse(reply.text)
            except ReplyError as problem:
                error = f"unparseable reply: {problem}"
        item.errors += error is not None
        entry = {"stage": stage, **info, "reply": reply.text, "error": error,
                 "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        item.log.append(entry)
        parsed.append((result, entry))
    return parsed


def deliberate(agent: ChatModel, policies: str, queries: list[str], settings: Settings) -> list[Item]:
    items = [Item(q) for q in queries]
    seed = settings.seed * 10_007
    intents = run_stage(agent, items, [prompts.decompose_messages(i.prompt) for i in items], prompts.DECOMPOSE,
                        settings, seed, prompts.parse_intents)
    for item, (found, entry) in zip(items, intents):
        item.intents = found or []
        entry["intents"] = item.intents
    cots = run_stage(agent, items, [prompts.initial_messages(i.prompt, i.intents, policies) for i in items],
                     prompts.INITIAL, settings, seed + 1, prompts.parse_cot)
    for item, (cot, entry) in zip(items, cots):
        item.states.append(cot or ([], ""))
        entry.update(thoughts=item.states[-1][0], response=item.states[-1][1])
    active = list(items)
    for k in range(1, settings.budget + 1):
        if not active:
            break
        agent_id = 1 + (k - 1) % 2
        conversations = [prompts.deliberation_messages(i.prompt, i.intents, policies, *i.states[-1], agent_id)
                         for i in active]
        edits = run_stage(agent, active, conversations, prompts.DELIBERATE, settings, seed + 2 + k,
                          str, round=k, deliberator=agent_id)
        still = []
        for item, (text, entry) in zip(active, edits):
            thoughts, response = item.states[-1]
            try:
                edit = None if text is None else prompts.parse_deliberation(text, len(thoughts))
            except ReplyError as problem:  # the round is spent; the CoT stays as it was
                edit = None
                item.errors += 1
                entry["error"] = f"unparseable reply: {problem}"
            if edit is not None and edit[0]:
                item.stop_reason = "complete"
                entry["complete"] = True
                continue
            if edit is not None:
                _, remove, add, revised = edit
                thoughts = [t for n, t in enumerate(thoughts, 1) if n not in remove] + add
                response = revised or response
                entry.update(complete=False, removed=remove, added=add)
            item.states.append((thoughts, response))
            entry.update(thoughts=thoughts, response=response)
            still.append(item)
        active = still
    refine(agent, items, policies, settings)
    return items


def all_rounds(item: Item, budget: int) -> tuple[tuple[str, ...], str]:
    """(T_{≤b}, r_b): the thoughts of the state after round b, then those removed in rounds up to b, in order."""
    states = item.states[:min(budget, len(item.states) - 1) + 1]
    thoughts = list(states[-1][0])
    for earlier, _ in states[:-1]:
        thoughts += [t for t in earlier if t not in thoughts]
    return tuple(thoughts), states[-1][1]


def refine(agent: ChatModel, items: list[Item], policies: str, settings: Settings) -> None:
    """Refines the final state of every item (and, for `quality_budgets`, the state after each budget)."""
    budgets = sorted({settings.budget, *settings.quality_budgets})
    jobs = [(item, b, item.states[min(b, len(item.states) - 1)]) for item in items for b in budgets]
    if not settings.refine:
        for item, b, state in jobs:
            item.refined[b] = state
        return
    unique = {}  # (item, T_{≤b}, r_b) -> job: what several budgets show the refiner identically is refined once
    for item, b, _ in jobs:
        unique.setdefault((id(item), *all_rounds(item, b)), (item, b))
    todo = list(unique.items())
    conversations = [prompts.refine_messages(item.prompt, policies, list(key[1]), key[2]) for key, (item, _) in todo]
    results = run_stage(agent, [item for _, (item, _) in todo], conversations, prompts.REFINE, settings,
                        settings.seed * 10_007 + 997, prompts.parse_cot)
    done = {}
    for (key, (item, b)), (result, entry) in zip(todo, results):
        entry["budget"] = b
        if result is None:  # a failed refinement keeps T_b and r_b
            done[key] = (item.states[min(b, len(item.states) - 1)], 0)
            continue
        kept, dropped = prompts.keep_only_given(result[0], list(key[1]))
        done[key] = ((kept, result[1]), dropped)
        entry.update(thoughts=kept, response=result[1], dropped_new_thoughts=dropped)
    for item, b, _ in jobs:
        item.refined[b], dropped = done[(id(item), *all_rounds(item, b))]
        if b == settings.budget:
            item.dropped_by_refiner = dropped


def zero_shot(agent: ChatModel, policies: str, queries: list[str], settings: Settings) -> list[Item]:
    """The single-agent baseline (LLM_ZS): one call writes the thoughts and the response; no decomposition,
    deliberation or refinement."""
    items = [Item(q, stop_reason="single agent") for q in queries]
    cots = run_stage(agent, items, [prompts.zero_shot_messages(i.prompt, policies) for i in items],
                     prompts.ZERO_SHOT, settings, settings.seed * 10_007 + 5, prompts.parse_cot)
    for item, (cot, entry) in zip(items, cots):
        item.states.append(cot or ([], ""))
        entry.update(thoughts=item.states[0][0], response=item.states[0][1])
        item.refined = {b: item.states[0] for b in {settings.budget, *settings.quality_budgets}}
    return items
