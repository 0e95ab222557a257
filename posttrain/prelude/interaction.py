"""One PRELUDE interaction: an agent against the environment for one stream of contexts, every round appended to a
jsonl log as it ends (context, preference used, output, edit, cost, preference stored, tokens spent).

The log is the checkpoint: `interact` on an existing log replays its rows into a fresh agent (`observe`, no LLM
call) and continues from the round after the last complete one, with the same per-round seeds, so a killed run
resumes and ends as the uninterrupted one would.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from posttrain.envs.prelude import PreludeEnv
from posttrain.prelude import world
from posttrain.prelude.agents import PreludeAgent
from posttrain.utils.jsonl import read_complete_rows


def read_log(path: str) -> list[dict]:
    """The complete rows of a log (a half-written last line, from a kill mid-write, is dropped)."""
    return read_complete_rows(path)


def check_log(rows: list[dict], env: PreludeEnv, seed: int, name: str, log_path: str) -> None:
    """A log is resumed only when it is this interaction's: same agent, seed and context stream, no more rounds."""
    if len(rows) > len(env.contexts):
        raise ValueError(f"{log_path}: {len(rows)} rounds logged, but the stream has {len(env.contexts)}")
    for line, (row, context) in enumerate(zip(rows, env.contexts), start=1):
        expected = {"agent": name, "seed": seed, "round": line - 1, "context_id": context.id}
        found = {key: row.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"{log_path}:{line}: the logged round {found} is not this run's {expected}; "
                             "remove the log or point the run at another folder")


def interact(agent: PreludeAgent, env: PreludeEnv, seed: int, log_path: str, name: str = "",
             scorer: Callable[[str | None, str], dict] | None = None) -> list[dict]:
    """Runs (or finishes) the interaction; returns every round's row. `scorer(preference used, source)` adds its
    accuracy fields to each row (`preference_scores` in the synthetic world, `TextMatcher` for real tables)."""
    rows = read_log(log_path)
    check_log(rows, env, seed, name, log_path)
    with open(log_path, "w", encoding="utf-8") as handle:  # rewritten without any torn last line
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    for row in rows:
        agent.observe(row)
    observation, _ = env.reset(seed=seed, options={"start": len(rows)})
    terminated = len(rows) >= len(env.contexts)
    while not terminated:
        t, context = env.round, env.context
        before = (agent.llm.usage.prompt_tokens, agent.llm.usage.completion_tokens)
        agent_seed = (seed + 1) * 1_000_003 + 4 * t
        hidden = env.hidden_preference() if agent.oracle else None
        act = agent.act(observation["text"], t, agent_seed, hidden=hidden)
        observation, reward, terminated, _, info = env.step(act.output)
        stored = agent.learn(context.text, act, info["edited"], t, agent_seed)
        row = {"agent": name, "seed": seed, "round": t, "source": context.source, "context_id": context.id,
               "context": context.text, "preference": act.preference, "output": act.output,
               "edited": info["edited"], "cost": info["cost"], "stored": stored,
               "agent_prompt_tokens": agent.llm.usage.prompt_tokens - before[0],
               "agent_completion_tokens": agent.llm.usage.completion_tokens - before[1],
               "user_prompt_tokens": info["user_prompt_tokens"],
               "user_completion_tokens": info["user_completion_tokens"], "user_error": info["user_error"]}
        if scorer is not None:
            row.update(scorer(act.preference, context.source))
        agent.observe(row)
        rows.append(row)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def preference_scores(preference: str | None, source: str) -> dict:
    """How well a used preference matches the source's hidden one (None for agents that keep no preference)."""
    if preference is None:
        return {"exact": None, "jaccard": None, "class_match": None}
    attributes, hidden = world.parse(preference), world.HIDDEN[source]
    return {"exact": float(attributes == hidden), "jaccard": world.jaccard(attributes, hidden),
            "class_match": float(bool(attributes) and world.closest_source(attributes) == source)}
