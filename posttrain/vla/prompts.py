"""Spatial prompts: the suffix appended to every robot instruction so that the planner's hidden states, which the
action expert reads, come from its grounding mode. No answer to the prompt is generated or trained.

Types (`data.spatial_prompt`): `none` (the instruction alone), `random` (the instruction padded with as many random
characters as the unified prompt adds: the same length, no meaning), `box` (asks for the key objects' boxes, the
released configs' variant) and `unified` (asks to work out the task and locate what matters, the revision's best).
"""
from __future__ import annotations

import random
import string

from posttrain.utils.config import check_choice

PROMPT_TYPES = ("none", "random", "box", "unified")
TEMPLATES = {
    "box": "The task: {instruction}. Find the objects it involves and give their bounding boxes.",
    "unified": "The task: {instruction}. Work out how to do it and locate the object to act on.",
}


def spatial_prompt(instruction: str, kind: str, seed: int = 0, where: str = "data.spatial_prompt") -> str:
    """`instruction` ⊕ the spatial prompt of `kind`; `random` draws its padding from `seed` (e.g. the frame's index),
    so the same frame always gets the same padding."""
    check_choice(kind, PROMPT_TYPES, where)
    if kind == "none":
        return instruction
    if kind == "random":
        length = len(TEMPLATES["unified"].format(instruction=instruction)) - len(instruction)
        rng = random.Random(seed)
        return instruction + " " + "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(length - 1))
    return TEMPLATES[kind].format(instruction=instruction.strip().rstrip("."))

