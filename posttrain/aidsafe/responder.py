"""Scripted agents of the synthetic safety world: the rules behind `agent=scripted` for experiment=aidsafe.

They read the same prompts a language model gets (`prompts.py`) and reply in the same formats, with noise at set
probabilities, drawn from the per-conversation `rng` of `ScriptedChatModel`:

- decomposer: recovers each intent of the query with probability `p_intent`;
- initial agent: one thought per decomposed intent, deceptive (the wrong verdict) with probability `p_wrong`, a
  repeated thought with probability `p_redundant`; the response follows its thoughts;
- deliberating agents: each missing or wrong thought is fixed (removed / added) with probability `p_fix`; a
  redundant thought is added with probability `p_redundant` and a deceptive one with `p_deceptive`; an agent that
  sees no error declares the CoT complete, and one that does see errors still declares it complete with probability
  `p_false_complete` (the stopping rule's failure mode); with probability `p_stall` it refuses to deliberate (its
  guardrails), an unusable reply;
- refiner: sees only the query and the policy rules: keeps the first copy of every thought that the rules support
  for an intent the query names and deletes the rest; the response follows the kept thoughts;
- single agent (zero-shot baseline): finds intents itself with `p_intent`, thoughts as the initial agent, and on a
  query with a harmful intent refuses its benign intents too with probability `p_lump` (no decomposition);
- ear-whisperer: mutates the best beliefs shown to it (a word replaced, added or dropped) or writes new ones from
  `world.BELIEF_WORDS`.
"""
from __future__ import annotations

import random
import re

from posttrain.agents.scripted import Responder
from posttrain.aidsafe import prompts
from posttrain.aidsafe.world import (
    BELIEF_WORDS,
    DEFAULT_POLICIES,
    NO,
    OK,
    PolicyBook,
    make_thought,
    parse_thought,
    render_response,
)
from posttrain.utils.config import check


class SafetyWorldAgents(Responder):
    def __init__(self, policies=None, p_intent: float = 0.75, p_wrong: float = 0.3,
                 p_redundant: float = 0.25, p_fix: float = 0.6, p_deceptive: float = 0.1,
                 p_false_complete: float = 0.1, p_stall: float = 0.02, p_lump: float = 0.5,
                 key: str = "scripted.policies"):
        self.probabilities = dict(p_intent=p_intent, p_wrong=p_wrong, p_redundant=p_redundant, p_fix=p_fix,
                                  p_deceptive=p_deceptive, p_false_complete=p_false_complete, p_stall=p_stall,
                                  p_lump=p_lump)
        for name, p in self.probabilities.items():
            check(0.0 <= p <= 1.0, f"scripted.{name}", f"must be a probability, got {p}")
        self.__dict__.update(self.probabilities)
        self.book = PolicyBook(list(policies or DEFAULT_POLICIES), key=key)  # key: the setting the policies came from

    def respond(self, messages: list[dict], rng: random.Random) -> str:
        stage, blocks = prompts.stage_of(messages), prompts.sections(messages[-1]["content"])
        query = blocks.get("QUERY", "")
        if stage == prompts.DECOMPOSE:
            return self.decompose(query, rng)
        if stage == prompts.INITIAL:
            intents = [name for name, _ in prompts.parse_intents(blocks["INTENTS"])] if "- " in blocks.get(
                "INTENTS", "") else []
            return self.cot([i for i in intents if i in self.book.rules], rng)
        if stage == prompts.ZERO_SHOT:
            found = [i for i in self.book.intents_in(query) if rng.random() < self.p_intent]
            return self.cot(found, rng, lump=any(self.book.harmful(i) for i in found) and rng.random() < self.p_lump)
        if stage == prompts.DELIBERATE:
            return self.deliberate(query, prompts.bullet_items(blocks.get("THOUGHTS", "")), rng)
        if stage == prompts.REFINE:
            return self.refine(query, prompts.bullet_items(blocks.get("THOUGHTS", "")))
        if stage == prompts.WHISPER:
            count = int(re.search(r"Write (\d+)", messages[0]["content"]).group(1))
            return self.whisper(blocks.get("BEST_BELIEFS", ""), count, rng)
        raise ValueError(f"no scripted agent for stage {stage!r}")

    # ---- roles ----------------------------------------------------------------------------------------------
    def decompose(self, query: str, rng: random.Random) -> str:
        found = [i for i in dict.fromkeys(self.book.intents_in(query)) if rng.random() < self.p_intent]
        return "\n".join(f"- {i}: {prompts.MALICIOUS if self.book.harmful(i) else prompts.BENIGN}" for i in found) \
            or "- request: benign"

    def noisy_thought(self, intent: str, rng: random.Random, p_wrong: float) -> str:
        number, verdict = self.book.rules[intent]
        return make_thought(intent, number, flip(verdict) if rng.random() < p_wrong else verdict)

    def cot(self, intents: list[str], rng: random.Random, lump: bool = False) -> str:
        thoughts = []
        for intent in intents:
            if lump and not self.book.harmful(intent):
                number, _ = self.book.rules[intent]
                thoughts.append(make_thought(intent, number, NO))
            else:
                thoughts.append(self.noisy_thought(intent, rng, self.p_wrong))
        if thoughts and rng.random() < self.p_redundant:
            thoughts.append(rng.choice(thoughts))
        return f"### THOUGHTS\n{prompts.numbered(thoughts)}\n### RESPONSE\n{respond_to(thoughts)}"

    def deliberate(self, query: str, thoughts: list[str], rng: random.Random) -> str:
        if rng.random() < self.p_stall:
            return "I can't help with that request."
        required = self.book.required_thoughts(query)
        wrong = [n for n, t in enumerate(thoughts, 1) if self.is_wrong(query, t)]
        missing = [t for t in required if t not in thoughts]
        if not wrong and not missing or rng.random() < self.p_false_complete:
            return "### VERDICT\ncomplete"
        remove = [n for n in wrong if rng.random() < self.p_fix]
        add = [t for t in required if (t in missing or any(self.about(thoughts[n - 1], t) for n in remove))
               and rng.random() < self.p_fix]
        kept = [t for n, t in enumerate(thoughts, 1) if n not in remove] + add
        if kept and rng.random() < self.p_redundant:
            add.append(rng.choice(kept))
        intents = self.book.intents_in(query)
        if intents and rng.random() < self.p_deceptive:
            add.append(self.noisy_thought(rng.choice(intents), rng, 1.0))
        final = [t for n, t in enumerate(thoughts, 1) if n not in remove] + add
        return (f"### VERDICT\nedit\n### REMOVE\n{', '.join(map(str, remove)) or 'none'}\n"
                f"### ADD\n{chr(10).join('- ' + t for t in add) or '(none)'}\n### RESPONSE\n{respond_to(final)}")

    def refine(self, query: str, thoughts: list[str]) -> str:
        intents, kept = set(self.book.intents_in(query)), []
        for text in thoughts:
            parsed = parse_thought(text)
            if parsed and parsed[0] in intents and text == self.book.thought(parsed[0]) and text not in kept:
                kept.append(text)
        return f"### THOUGHTS\n{prompts.numbered(kept)}\n### RESPONSE\n{respond_to(kept)}"

    def whisper(self, shown: str, count: int, rng: random.Random) -> str:
        best = [re.sub(r"\s*\(score [^)]*\)\s*$", "", b) for b in prompts.bullet_items(shown)]
        beliefs = []
        for _ in range(count):
            words = rng.choice(best).split() if best and rng.random() < 0.7 else []
            move = rng.random()
            if words and move < 0.4:
                words[rng.randrange(len(words))] = rng.choice(BELIEF_WORDS)
            elif words and move < 0.6 and len(words) > 1:
                words.pop(rng.randrange(len(words)))
            else:
                words.insert(rng.randrange(len(words) + 1), rng.choice(BELIEF_WORDS))
            beliefs.append(" ".join(words[:4]))
        return "\n".join(f"- {b}" for b in beliefs)

    # ---- helpers --------------------------------------------------------------------------------------------
    def is_wrong(self, query: str, thought: str) -> bool:
        """About an intent of the query, and not what the policies require for it."""
        parsed = parse_thought(thought)
        return parsed is not None and parsed[0] in self.book.intents_in(query) and thought != self.book.thought(
            parsed[0])

    @staticmethod
    def about(thought: str, other: str) -> bool:
        a, b = parse_thought(thought), parse_thought(other)
        return a is not None and b is not None and a[0] == b[0]


def flip(verdict: str) -> str:
    return NO if verdict == OK else OK


def respond_to(thoughts: list[str]) -> str:
    """The response that follows a list of thoughts: help what they clear, refuse what they reject (the last
    thought about an intent decides)."""
    verdicts = {}
    for text in thoughts:
        parsed = parse_thought(text)
        if parsed:
            verdicts[parsed[0]] = parsed[2]
    return render_response([i for i, v in verdicts.items() if v == OK], [i for i, v in verdicts.items() if v == NO])
