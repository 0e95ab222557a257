"""PRELUDE contexts for `trainer.predict`: one item per seed, that seed's stream of T contexts (every agent of the
run answers the same stream). Contexts come from a jsonl file (`path`: `{"text", "source"}` a line) or, by default,
from the synthetic world (fresh documents per seed). `preferences` names the user's table (synthetic |
summarization | email, posttrain/prelude/preferences.py); every context's source must be in it."""
from __future__ import annotations

import math
import os

import lightning as L
from torch.utils.data import DataLoader

from posttrain.prelude import world
from posttrain.prelude.contexts import load_contexts, stream, synthetic_contexts
from posttrain.prelude.preferences import preference_table
from posttrain.prelude.prompts import TASKS
from posttrain.utils.config import check, check_choice


class PreludeDataModule(L.LightningDataModule):
    def __init__(self, tokenizer=None, path: str | None = None, preferences: str = "synthetic", task: str = "summary",
                 rounds: int = 200, seeds=(0, 1, 2), per_source: int | None = None, length: int = 30,
                 topical: float = 0.6):
        super().__init__()
        check_choice(task, TASKS, "data.task")
        check(rounds >= 1, "data.rounds", f"must be >= 1, got {rounds}")
        check(len(seeds) >= 1, "data.seeds", "at least one seed")
        self.preference_name, self.preferences = preferences, preference_table(preferences)
        check(path is None or os.path.isfile(path), "data.path", f"no such file {path!r} (a jsonl of contexts)")
        check(path is not None or preferences == "synthetic", "data.preferences",
              f"the synthetic world's sources need preferences=synthetic, got {preferences!r} (or set data.path)")
        self.path, self.task, self.rounds, self.seeds = path, task, rounds, [int(s) for s in seeds]
        self.per_source = per_source or math.ceil(rounds / len(world.SOURCES))
        self.length, self.topical = length, topical
        self.items: list[dict] = []

    @property
    def synthetic(self) -> bool:
        """Whether the hidden preferences are the synthetic world's attribute sets (accuracy is then exact)."""
        return self.preference_name == "synthetic"

    def setup(self, stage: str | None = None) -> None:
        if self.items:
            return
        loaded = load_contexts(self.path, self.preferences) if self.path else None
        for seed in self.seeds:
            contexts = loaded or synthetic_contexts(self.per_source, seed, length=self.length, topical=self.topical)
            check(len(contexts) >= self.rounds, "data.rounds",
                  f"{self.rounds} rounds but only {len(contexts)} contexts ({self.path or 'synthetic world'})")
            self.items.append({"seed": seed, "contexts": stream(contexts, self.rounds, seed)})

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # contexts are text: nothing to move

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=1, shuffle=False, collate_fn=list)
