"""The agent's prompt and its JSON answer (GFlowVLM's format, after RL4VLM).

The prompt p_t holds the goal g, the history of states s_{0:t-1} and actions a_{0:t-1} (non-Markovian; the
Markovian variant leaves it out), the current state s_t (as text for a text model; a vision-language model sees it
only as the image) and the admissible actions A_t. The model answers `{"thoughts": c_t, "action": a_t}`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

OK, UNPARSABLE, INADMISSIBLE = "ok", "unparsable", "inadmissible"
ACTION_FIELD = re.compile(r'"action"\s*:\s*"((?:[^"\\]|\\.)*)"')
THOUGHT_FIELD = re.compile(r'"thoughts"\s*:\s*"((?:[^"\\]|\\.)*)"')


def format_prompt(goal: str, history: list[tuple[str, str]], state: str | None, admissible: list[str],
                  markovian: bool = False) -> str:
    """The prompt text; `history` is [(state text, action text)] of the earlier steps, `state` None when the current
    state is shown as an image."""
    lines = [f"goal: {goal}"]
    if history and not markovian:
        lines.append("history: " + "; ".join(f"{s} > {a}" for s, a in history))
    if state is not None:
        lines.append(f"state: {state}")
    lines.append("actions: " + ", ".join(admissible))
    return "\n".join(lines) + "\n"


def format_output(thought: str, action: str) -> str:
    """The answer as the expert writes it, and as every off-policy trajectory is tokenised."""
    return json.dumps({"thoughts": thought, "action": action})


@dataclass(frozen=True)
class Parsed:
    status: str  # OK | UNPARSABLE | INADMISSIBLE
    action: int | None  # index into the admissible actions when OK
    action_text: str | None
    thought: str | None
    action_start: int | None  # character offset of the action's value in the text (None: unparsable)


def parse_output(text: str, admissible: list[str]) -> Parsed:
    """The action (and thoughts) of a model's answer; never raises.

    The first `"action": "<value>"` and `"thoughts": "<value>"` pairs are read wherever they are (a model may stop
    before the closing brace or add text around the object), their values JSON-unescaped. An answer without an
    action field is UNPARSABLE; an action outside `admissible` (compared after stripping spaces) is INADMISSIBLE.
    """
    action, thought = ACTION_FIELD.search(text), THOUGHT_FIELD.search(text)
    thought_text = unescaped(thought.group(1)) if thought else None
    if action is None:
        return Parsed(UNPARSABLE, None, None, thought_text, None)
    value, names = unescaped(action.group(1)).strip(), [a.strip() for a in admissible]
    if value not in names:
        return Parsed(INADMISSIBLE, None, value, thought_text, action.start(1))
    return Parsed(OK, names.index(value), value, thought_text, action.start(1))


def unescaped(body: str) -> str:
    try:
        return json.loads(f'"{body}"')
    except json.JSONDecodeError:
        return body
