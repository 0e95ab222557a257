"""The embedded synthetic PRELUDE world: documents from S sources, a closed vocabulary of style attributes, each
source's hidden attribute set, a renderer that applies attributes to a document's content and detectors that read
them back from any text.

A preference is a set of attributes; as text it is the attributes' phrases joined by commas (`describe`), and any
text is read back by finding those phrases in it (`parse`), so a language model's free-form preference can be scored
in this world too. Every transform adds only marker words that no document uses, which is what lets the detectors
separate style from content.
"""
from __future__ import annotations

import random
from collections import Counter

ATTRIBUTES = {  # attribute -> the phrase that names it in prompts
    "bullets": "bullet points",
    "short_sentences": "short sentences",
    "brief": "brief",
    "emojis": "emojis",
    "questions": "question-answering style",
    "second_person": "second-person narrative",
    "greeting": "formal greeting",
    "closing": "formal closing",
    "positive": "positive tone",
    "call_to_action": "call to action",
}
# Each source's hidden preference, after the paper's summarisation table (news ~ CNN/DailyMail, reddit ~ SLF5K, ...).
HIDDEN = {
    "news": frozenset({"short_sentences", "positive", "emojis"}),
    "reddit": frozenset({"second_person", "brief", "call_to_action"}),
    "wiki": frozenset({"bullets", "brief"}),
    "arxiv": frozenset({"questions", "emojis", "brief"}),
    "imdb": frozenset({"questions", "bullets"}),
}
TOPICS = {
    "news": "minister election police court economy storm protest mayor budget strike airport hospital verdict "
            "ceasefire inflation",
    "reddit": "roommate boyfriend landlord apartment breakup coworker sister advice drama texted birthday wedding "
              "roommates crush therapist",
    "wiki": "province river dynasty century population species genus railway cathedral municipality kingdom census "
            "tributary parish archipelago",
    "arxiv": "transformer gradient benchmark dataset optimizer embedding convolution inference latent attention "
             "regularization tokenizer ablation encoder variance",
    "imdb": "director actor sequel plot cinematography soundtrack villain screenplay cameo trailer franchise "
            "protagonist dialogue premiere studio",
}
SHARED = ("year people time day group report part number area end place week case result way point world side "
          "state family").split()
CONTENT_WORDS, BRIEF_WORDS, SENTENCE, SHORT_SENTENCE = 12, 6, 6, 3
EMOJI, GREETING, CLOSING = "🙂", "dear reader ,", "best regards ."
POSITIVE, CALL = "good news :", "please share your thoughts ."
YOU, QUESTION = ("you", "see"), ("what", "about")
MARKERS = frozenset(f"{EMOJI} {GREETING} {CLOSING} {POSITIVE} {CALL} - . ? , :".split() + [*YOU, *QUESTION])
SOURCES = tuple(HIDDEN)


def describe(attributes) -> str:
    """A preference as text: its phrases in the vocabulary's order ("" for none)."""
    return ", ".join(phrase for name, phrase in ATTRIBUTES.items() if name in attributes)


def parse(text: str | None) -> frozenset[str]:
    """The attributes whose phrases occur in `text` (case-insensitive)."""
    lowered = (text or "").lower()
    return frozenset(name for name, phrase in ATTRIBUTES.items() if phrase in lowered)


def documents(source: str, count: int, rng: random.Random, length: int = 30, topical: float = 0.6) -> list[str]:
    """`count` documents of `length` words, each word from the source's topic vocabulary with probability
    `topical`, else from the vocabulary all sources share."""
    topic = TOPICS[source].split()
    return [" ".join(rng.choice(topic) if rng.random() < topical else rng.choice(SHARED) for _ in range(length))
            for _ in range(count)]


def content(document: str) -> list[str]:
    """What a response conveys: the document's first CONTENT_WORDS words."""
    return document.split()[:CONTENT_WORDS]


def render(words: list[str], attributes) -> str:
    """The response with `attributes` applied to the content `words` (a plain two-sentence summary for none)."""
    words = words[:BRIEF_WORDS] if "brief" in attributes else words
    size = SHORT_SENTENCE if "short_sentences" in attributes else SENTENCE
    sentences = []
    for start in range(0, len(words), size):
        chunk = list(words[start:start + size])
        if "second_person" in attributes:
            chunk = [*YOU, *chunk]
        if "questions" in attributes:
            chunk = [*QUESTION, *chunk, "?"]
        else:
            chunk.append(".")
        if "emojis" in attributes:
            chunk.append(EMOJI)
        sentences.append(" ".join(chunk))
    body = "\n".join(f"- {s}" for s in sentences) if "bullets" in attributes else " ".join(sentences)
    if "positive" in attributes:
        body = f"{POSITIVE}\n{body}"
    if "greeting" in attributes:
        body = f"{GREETING}\n{body}"
    if "call_to_action" in attributes:
        body = f"{body} {CALL}"
    if "closing" in attributes:
        body = f"{body}\n{CLOSING}"
    return body


def detect(text: str) -> frozenset[str]:
    """The attributes a text shows (the renderer's transforms read back)."""
    tokens = text.split()
    found = {name for name, present in (
        ("bullets", any(line.startswith("- ") for line in text.splitlines())),
        ("emojis", EMOJI in tokens),
        ("questions", "?" in tokens),
        ("second_person", "you" in tokens),
        ("greeting", text.startswith(GREETING)),
        ("closing", CLOSING in text),
        ("positive", POSITIVE in text),
        ("call_to_action", CALL in text),
    ) if present}
    words = [t for t in tokens if t not in MARKERS]
    if words and len(words) <= BRIEF_WORDS:
        found.add("brief")
    per_sentence, count = [], 0
    for token in tokens:
        if token in (".", "?"):
            per_sentence.append(count)
            count = 0
        elif token not in MARKERS:
            count += 1
    lengths = [n for n in per_sentence + [count] if n > 0]
    if lengths and max(lengths) <= SHORT_SENTENCE:
        found.add("short_sentences")
    return frozenset(found)


def perturb(attributes, noise: float, rng: random.Random) -> frozenset[str]:
    """With probability `noise`, drop one attribute or add one absent attribute (a coin decides; an empty set can
    only gain one): an imperfect inference."""
    attributes = set(attributes)
    if rng.random() < noise:
        absent = sorted(set(ATTRIBUTES) - attributes)
        if attributes and (rng.random() < 0.5 or not absent):
            attributes.discard(rng.choice(sorted(attributes)))
        else:
            attributes.add(rng.choice(absent))
    return frozenset(attributes)


def majority(sets: list) -> frozenset[str]:
    """The attributes in more than half of the sets."""
    counts = Counter(a for s in sets for a in s)
    return frozenset(a for a, n in counts.items() if n > len(sets) / 2)


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def closest_source(attributes) -> str:
    """The source whose hidden set is nearest (Jaccard) to `attributes`: the paper's preference-class accuracy."""
    return max(SOURCES, key=lambda s: (jaccard(attributes, HIDDEN[s]), -SOURCES.index(s)))
