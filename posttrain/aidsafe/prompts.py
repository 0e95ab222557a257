"""The prompts of AIDSAFE's stages and the parsers of their replies.

Every prompt is a system message that names the stage (its first line, `Stage: <name>`) and says what to do, and a
user message of `### <SECTION>` blocks (policies, query, intents, thoughts, response). Every reply is parsed
strictly; a reply that cannot be parsed raises `ReplyError`, which the pipeline records in the item's log and
counts (the item then falls back as `deliberation.py` says), never a crash.
"""
from __future__ import annotations

import re

DECOMPOSE, INITIAL, DELIBERATE, REFINE, ZERO_SHOT, WHISPER = (
    "intent decomposition", "initial thoughts", "deliberation", "refinement", "zero-shot thoughts", "ear-whisperer")
BENIGN, MALICIOUS = "benign", "malicious"


class ReplyError(ValueError):
    """A reply that does not follow its stage's format."""


def system(stage: str, task: str) -> dict:
    return {"role": "system", "content": f"Stage: {stage}\n{task}"}


def user(**blocks: str) -> dict:
    return {"role": "user", "content": "\n".join(f"### {name.upper()}\n{body}" for name, body in blocks.items())}


def sections(text: str) -> dict[str, str]:
    """{SECTION: body} of a `### SECTION` formatted text (names upper-cased)."""
    parts = re.split(r"^###\s*([A-Za-z_ -]+?)\s*$", text, flags=re.MULTILINE)
    return {name.strip().upper(): body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def stage_of(messages: list[dict]) -> str:
    first = messages[0]["content"].splitlines()[0] if messages and messages[0]["role"] == "system" else ""
    return first[len("Stage: "):].strip() if first.startswith("Stage: ") else ""


def numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1)) or "(none)"


def bullet_items(body: str) -> list[str]:
    """The items of `1. x` / `- x` / `* x` lines."""
    items = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip() for line in body.splitlines()
             if re.match(r"^\s*(?:\d+[.)]|[-*])\s+\S", line)]
    return [i for i in items if i]


def intent_lines(intents: list[tuple[str, str]]) -> str:
    return "\n".join(f"- {name}: {label}" for name, label in intents) or "(none)"


# ---- stage 0: intent decomposition ------------------------------------------------------------------------------
def decompose_messages(query: str) -> list[dict]:
    return [system(DECOMPOSE, "List every intent of the user's query, explicit and implicit, one per line as "
                              "'- <intent>: benign' or '- <intent>: malicious'. Write nothing else."),
            user(query=query)]


def parse_intents(text: str) -> list[tuple[str, str]]:
    found = re.findall(r"^\s*[-*]\s*([^:\n]+?)\s*:\s*(benign|malicious)\s*$", text, re.MULTILINE | re.IGNORECASE)
    if not found:
        raise ReplyError("no '- <intent>: benign|malicious' line")
    return [(name.strip().lower(), label.lower()) for name, label in found]


# ---- stage 1: initial thoughts (and the single-agent, zero-shot baseline) -----------------------------------------
COT_FORMAT = ("Reply with '### THOUGHTS' followed by numbered thoughts, one per line, each applying one policy to "
              "one intent, then '### RESPONSE' followed by the response to the user.")


def initial_messages(query: str, intents: list[tuple[str, str]], policies: str) -> list[dict]:
    return [system(INITIAL, "Reason step by step over the safety policies about each intent of the query, then "
                            "draft a response that follows them. " + COT_FORMAT),
            user(policies=policies, query=query, intents=intent_lines(intents))]


def zero_shot_messages(query: str, policies: str) -> list[dict]:
    return [system(ZERO_SHOT, "Reason step by step over the safety policies about the query, then respond. "
                              + COT_FORMAT),
            user(policies=policies, query=query)]


def parse_cot(text: str) -> tuple[list[str], str]:
    blocks = sections(text)
    if "THOUGHTS" not in blocks or "RESPONSE" not in blocks:
        raise ReplyError("needs '### THOUGHTS' and '### RESPONSE'")
    thoughts = bullet_items(blocks["THOUGHTS"])  # may be empty: a refiner can delete every thought
    if not blocks["RESPONSE"]:
        raise ReplyError("empty response")
    return thoughts, blocks["RESPONSE"].splitlines()[0].strip()


# ---- stage 2: deliberation --------------------------------------------------------------------------------------
def deliberation_messages(query: str, intents: list[tuple[str, str]], policies: str, thoughts: list[str],
                          response: str, agent: int) -> list[dict]:
    return [system(DELIBERATE, f"You are deliberating agent {agent}. Review the thoughts and the response against "
                               "every policy. If they are complete and correct, reply '### VERDICT' then "
                               "'complete'. Otherwise reply '### VERDICT' then 'edit', '### REMOVE' then the "
                               "numbers of wrong thoughts (comma separated, or 'none'), '### ADD' then new "
                               "policy-grounded thoughts as '- ' lines, and '### RESPONSE' then the revised "
                               "response."),
            user(policies=policies, query=query, intents=intent_lines(intents), thoughts=numbered(thoughts),
                 response=response)]


def parse_deliberation(text: str, count: int) -> tuple[bool, list[int], list[str], str | None]:
    """(complete, thought numbers to remove (1-based), thoughts to add, revised response or None)."""
    blocks = sections(text)
    verdict = re.match(r"\s*(complete|agree|edit)\b", blocks.get("VERDICT", "").lower())
    if verdict is None:
        raise ReplyError("needs '### VERDICT' with 'complete' or 'edit'")
    if verdict.group(1) != "edit":
        return True, [], [], None
    remove = [int(n) for n in re.findall(r"\d+", blocks.get("REMOVE", ""))]
    if any(not 1 <= n <= count for n in remove):
        raise ReplyError(f"REMOVE names a thought outside 1..{count}")
    response = blocks.get("RESPONSE", "").splitlines()[0].strip() if blocks.get("RESPONSE") else None
    return False, sorted(set(remove)), bullet_items(blocks.get("ADD", "")), response


# ---- stage 3: refinement ----------------------------------------------------------------------------------------
def refine_messages(query: str, policies: str, thoughts: list[str], response: str) -> list[dict]:
    return [system(REFINE, "You are a neutral judge. Remove the thoughts that are redundant or repeated, deceptive "
                           "(plausible but leading to a wrong conclusion) or inconsistent with the policies. Do not "
                           "write any new thought: copy the kept ones verbatim. " + COT_FORMAT),
            user(policies=policies, query=query, thoughts=numbered(thoughts), response=response)]


def keep_only_given(thoughts: list[str], given: list[str]) -> tuple[list[str], int]:
    """The refiner's delete-only rule: its thoughts, kept only where they copy one of the given thoughts (compared
    without surrounding spaces and case), each given thought at most once; returns (kept, how many were dropped as
    new content)."""
    pool = {}
    for text in given:
        pool.setdefault(text.strip().lower(), text.strip())
    kept, dropped = [], 0
    for text in thoughts:
        key = text.strip().lower()
        if key in pool:
            kept.append(pool.pop(key))
        else:
            dropped += 1
    return kept, dropped


# ---- belief-augmented preference data: the ear-whisperer --------------------------------------------------------
def whisper_messages(exemplars: list[tuple[str, float]], count: int) -> list[dict]:
    shown = "\n".join(f"- {belief} (score {score:.2f})" for belief, score in exemplars) or "(none yet)"
    return [system(WHISPER, f"Write {count} short beliefs, one per '- ' line, that a user could state before a "
                            "request to make an assistant believe the request is legitimate and the policies do "
                            "not apply. Higher scores were more effective; improve on them."),
            user(best_beliefs=shown)]


def parse_beliefs(text: str, max_chars: int) -> list[str]:
    beliefs = [b[:max_chars].strip() for b in bullet_items(text)]
    if not [b for b in beliefs if b]:
        raise ReplyError("no '- <belief>' line")
    return [b for b in beliefs if b]
