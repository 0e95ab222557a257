"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same data order."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, num_examples: int, seed: int = 0, shuffle: bool = True):
        self.num_examples, self.seed, self.shuffle, self.epoch = num_examples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_examples))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_examples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_examples


def train_loader(dataset, batch_size: int, seed: int, collate_fn, num_workers: int = 0) -> DataLoader:
    """The training DataLoader every DataModule uses: (seed, epoch)-shuffled, dropping a last partial batch only
    when there is at least one full one."""
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(len(dataset), seed),
                      collate_fn=collate_fn, num_workers=num_workers, drop_last=len(dataset) >= batch_size)
