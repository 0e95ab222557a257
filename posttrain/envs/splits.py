"""Named splits of the simulator's reset seeds: disjoint ranges, so a held-out layout is never a training one."""
from __future__ import annotations

from posttrain.utils.config import ConfigError, check_choice

SPLITS = ("train", "val", "test_combos", "test_paraphrase")
SEED_OFFSETS = {"train": 0, "val": 1_000_000, "test_combos": 2_000_000, "test_paraphrase": 3_000_000}
SPLIT_SIZE = 1_000_000  # seeds per split


def split_seeds(split: str, count: int, start: int = 0, where: str = "split") -> list[int]:
    """`count` reset seeds of `split`'s own range, from its `start`-th."""
    check_choice(split, SPLITS, where)
    if not (0 <= start and start + count <= SPLIT_SIZE):
        raise ConfigError(f"{where}: seeds {start}..{start + count} leave the split's range of {SPLIT_SIZE}")
    return [SEED_OFFSETS[split] + start + i for i in range(count)]
