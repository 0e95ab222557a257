"""The simulated user's latent preferences: one natural-language description per context source.

`summarization` and `email` are the paper's tables (PRELUDE's GPT-4 user); `synthetic` is the embedded world's,
written in the phrases of its closed attribute vocabulary (posttrain/prelude/world.py), so that its detectors can
check them and accuracy is exact."""
from __future__ import annotations

from posttrain.prelude import world
from posttrain.utils.config import check_choice

SUMMARIZATION = {
    "cnn_dailymail": "targeted to young children, storytelling, short sentences, playful language, interactive, "
                     "positive",
    "slf5k": "second person narrative, brief, show emotions, invoke personal reflection, immersive",
    "wikipedia": "bullet points, parallel structure, brief",
    "arxiv": "tweet style, simple English, inquisitive, skillful foreshadowing, with emojis",
    "imdb": "question answering style",
}
EMAIL = {
    "ccby": "structured, straight to the points, respectful, professional greeting and closing",
    "slf5k": "informal, conversational, no closing",
    "ampere": "casual tone, positive, clear, call to action",
    "paper_tweets": "engaging, personalized, professional tone, thankful closing",
}
TABLES = {"summarization": SUMMARIZATION, "email": EMAIL,
          "synthetic": {source: world.describe(attrs) for source, attrs in world.HIDDEN.items()}}


def preference_table(name: str, where: str = "data.preferences") -> dict[str, str]:
    """{source: latent preference} of a named table."""
    check_choice(name, TABLES, where)
    return dict(TABLES[name])
