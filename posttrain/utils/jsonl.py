"""Append-only jsonl logs that survive a kill: what a resumed run reads back."""
from __future__ import annotations

import json
import os


def read_complete_rows(path: str) -> list[dict]:
    """Every complete row of a jsonl log, in order; a half-written last line (a kill mid-write) ends the read, so
    its row is redone. A missing file has no rows."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows
