"""The simulated user's latent preferences: one natural-language description per context source.

`summarization` and `email` are the paper's tables (PRELUDE's GPT-4 user); `synthetic` is the embedded world's,
written in the phrases of its closed attribute vocabulary (posttrain/prelude/world.py), so that its detectors can
check them and accuracy is exact."""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

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


class TextMatcher:
    """The paper's preference accuracy for free-text preferences: a used preference counts as correct when, of all
    the table's latent preferences, the true source's is the most similar to it. Similarity here is TF-IDF cosine
    over the table's words (the paper uses a learned text-similarity score); a preference that shares no word with
    any of them matches none."""

    def __init__(self, table: dict[str, str]):
        self.sources = list(table)
        self.vectorizer = TfidfVectorizer().fit(table.values())
        self.latent = self.vectorizer.transform(table.values())  # (S, V)

    def closest(self, preference: str) -> str | None:
        scores = (self.latent @ self.vectorizer.transform([preference]).T).toarray()[:, 0]  # (S,)
        return self.sources[int(np.argmax(scores))] if scores.max() > 0 else None

    def __call__(self, preference: str | None, source: str) -> dict:
        if preference is None:
            return {"class_match": None}
        return {"class_match": float(self.closest(preference) == source)}
