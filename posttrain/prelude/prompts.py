"""The prompts of the PRELUDE interaction, after the paper's (Gao et al., 2024, appendix; phrasing rebuilt from its
description, not verified word for word): the task prompt with and without a preference, the inference prompt over
(original, revised) pairs, the aggregation prompt over retrieved preferences, ICL-edit's and CoT-edit's prompts,
and the simulated user's yes/no judgement and rewrite.

Every free text (a document, an output, an edit) sits in a triple-quoted block and every preference on one line
after "prefers the following style:", so the prompts read naturally to a language model and the synthetic world's
scripted agents (posttrain/prelude/scripted.py) can take them apart.
"""
from __future__ import annotations

import re

TASKS = {  # task -> (document label, noun, the request)
    "summary": ("Article", "summary", "a summary of the above article"),
    "email": ("Notes", "email", "a short email based on the above notes"),
}
BLOCK = re.compile(r'"""\n(.*?)\n"""', re.S)
STYLE = re.compile(r"prefers the following style: (.*)$", re.M)
ANSWER = "Answer:"
NO_PREFERENCE = "no specific style"


def block(text: str) -> str:
    return f'"""\n{text}\n"""'


def one_line(text: str) -> str:
    return " ".join(text.split())


def article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def task(kind: str, context: str, preference: str | None = None) -> str:
    label, noun, request = TASKS[kind]
    if not preference:
        return f"{label}:\n{block(context)}\n\nPlease write {request}."
    return (f"{label}:\n{block(context)}\n\nAssume that you need to write {article(noun)} for a user who prefers the "
            f"following style: {one_line(preference)}\nPlease write {request} that follows this style.")


def icl_edit(kind: str, context: str, pairs: list[tuple[str, str]], reason: bool = False) -> str:
    """ICL-edit: the retrieved (original, edited) outputs as examples; `reason` (CoT-edit) asks to explain the
    edits first and to write the output after a line "Answer:"."""
    label, noun, request = TASKS[kind]
    examples = "".join(f"Original {noun} {i}:\n{block(y)}\nEdited {noun} {i}:\n{block(edited)}\n\n"
                       for i, (y, edited) in enumerate(pairs, start=1))
    text = (f"Examples of {noun}s this user edited, for documents similar to the one below:\n\n{examples}"
            f"{label}:\n{block(context)}\n\nPlease write {request} in the style the user's edits show.")
    if reason:
        text += (f" First explain in a few sentences what the edits reveal about the user's preferred style, then "
                 f"write the {noun} after a line '{ANSWER}'.")
    return text


def inference(kind: str, pairs: list[tuple[str, str]]) -> str:
    """What preference do these (original, revised) pairs reveal? A short, generic phrase."""
    noun = TASKS[kind][1]
    header = (f"An original {noun} and its revision by a user:" if len(pairs) == 1
              else f"Pairs of an original {noun} and its revision by a user:")
    shown = "".join(f"Original {noun}:\n{block(y)}\nRevised {noun}:\n{block(edited)}\n\n" for y, edited in pairs)
    return (f"{header}\n\n{shown}Based on the edits and revision by this user on the original {noun} in the above "
            f"examples, what do you find about this user's generic preference in terms of writing style and "
            f"formatting? Please answer in a short phrase and only recommend those preferences that are widely used.")


def aggregation(kind: str, preferences: list[str]) -> str:
    noun = TASKS[kind][1]
    listed = "".join(f"- {one_line(p)}\n" for p in preferences)
    return (f"List of user preferences successfully used to write {noun}s of similar documents:\n{listed}\n"
            f"Based on the above examples, please come up with a short phrase with the most represented writing "
            f"preferences of this user.")


def judge(kind: str, output: str, preference: str) -> str:
    noun = TASKS[kind][1]
    return (f"Is the following {noun} good for a user who prefers the following style: {one_line(preference)}\n"
            f"{block(output)}\nPlease answer yes or no.")


def rewrite(kind: str, context: str, output: str, preference: str) -> str:
    label, noun, _ = TASKS[kind]
    return (f"Document:\n{block(context)}\n\n{noun.capitalize()}:\n{block(output)}\n\nPlease revise the above "
            f"{noun} of the document for a user who prefers the following style: {one_line(preference)}\n"
            f"Return only the revised {noun}.")


def answer_of(reply: str) -> str:
    """CoT-edit's output: what follows the last "Answer:" line (the whole reply when there is none)."""
    return reply.rsplit(ANSWER, 1)[-1].strip() if ANSWER in reply else reply.strip()


def blocks(prompt: str) -> list[str]:
    return BLOCK.findall(prompt)


def style(prompt: str) -> str:
    match = STYLE.search(prompt)
    return match.group(1) if match else ""
