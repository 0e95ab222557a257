"""The synthetic world's language model: every PRELUDE prompt (posttrain/prelude/prompts.py) answered by rules.

- generation: the document's content rendered with the attributes the preference names;
- inference: the attributes detected in each revised output, each set perturbed with probability `noise` (an
  imperfect reader), then their majority over the pairs;
- aggregation: the attributes named by more than half of the listed preferences;
- ICL-edit / CoT-edit: the majority of the (noisily) detected attributes of the edited examples, applied to the
  new document; CoT writes its reasoning first;
- the user's judgement: "yes" when the output shows exactly the preferred attributes; the rewrite renders the
  document's content with them.
"""
from __future__ import annotations

import random

from posttrain.agents import Responder
from posttrain.prelude import prompts, world
from posttrain.utils.config import check


class PreludeResponder(Responder):
    def __init__(self, noise: float = 0.0):
        check(0.0 <= noise <= 1.0, "scripted.noise", f"must be in [0, 1], got {noise}")
        self.noise = noise

    def respond(self, messages: list[dict], rng: random.Random) -> str:
        prompt = messages[-1]["content"]
        first = prompt.split("\n", 1)[0]
        texts = prompts.blocks(prompt)
        if first.startswith(("Article:", "Notes:")):
            return world.render(world.content(texts[0]), world.parse(prompts.style(prompt)))
        if first.startswith("Document:"):
            return world.render(world.content(texts[0]), world.parse(prompts.style(prompt)))
        if first.startswith("Is the following"):
            return "yes" if world.detect(texts[0]) == world.parse(prompts.style(prompt)) else "no"
        if first.startswith(("An original", "Pairs of")):
            return self.phrase(self.read_edits(texts[1::2], rng))
        if first.startswith("List of user preferences"):
            listed = [line[2:] for line in prompt.splitlines() if line.startswith("- ")]
            return self.phrase(world.majority([world.parse(p) for p in listed]))
        if first.startswith("Examples of"):
            attributes = self.read_edits(texts[1:-1:2], rng)
            output = world.render(world.content(texts[-1]), attributes)
            if prompts.ANSWER in prompt:  # CoT-edit: the reasoning, then the answer
                return (f"The edits consistently show {self.phrase(attributes)}, so the new output should follow "
                        f"that style.\n{prompts.ANSWER}\n{output}")
            return output
        raise ValueError(f"not a PRELUDE prompt: {first[:60]!r}")

    def read_edits(self, edited: list[str], rng: random.Random) -> frozenset[str]:
        return world.majority([world.perturb(world.detect(text), self.noise, rng) for text in edited])

    @staticmethod
    def phrase(attributes) -> str:
        return world.describe(attributes) or prompts.NO_PREFERENCE
