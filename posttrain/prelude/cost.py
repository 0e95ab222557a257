"""The PRELUDE edit cost: Levenshtein distance between the word-token sequences of the agent's output and the
user's edit (insert, delete and substitute each cost 1), computed by rapidfuzz on token lists.

Tokenisation approximates NLTK's `word_tokenize` (which the paper uses) without NLTK: runs of word characters are
tokens and every other non-space character is a token of its own. It differs from NLTK in that contractions stay
whole ("don't" is one token, NLTK makes "do" "n't"), a period inside a word ("U.S.") is split, and quotes are not
rewritten to `` and ''. Costs are therefore comparable between runs of this code, not digit for digit with the
paper's."""
from __future__ import annotations

import re

from rapidfuzz.distance import Levenshtein

TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def edit_cost(output: str, edited: str) -> int:
    """Δ_edit(y, y'): the word-level Levenshtein distance."""
    return Levenshtein.distance(word_tokens(output), word_tokens(edited))
