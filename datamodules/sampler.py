"""Samplers whose order depends only on (seed, epoch), so a resumed run sees the same data order: a shuffling one, and
batches at a fixed ratio of two groups of samples."""
from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler


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


def cycled_order(count: int, length: int, generator: torch.Generator) -> list[int]:
    """`length` indices into `count`: shuffled passes one after another (every index once per pass)."""
    passes = -(-length // count)
    return torch.cat([torch.randperm(count, generator=generator) for _ in range(passes)])[:length].tolist()


class RatioBatchSampler(BatchSampler):
    """Batches of `batch_size` dataset indices, the first `first_per_batch` drawn from `first` and the rest from
    `second` (e.g. real and generated samples at a fixed ratio), each group in shuffled passes of its own (the
    smaller group repeats sooner); the order is a function of (seed, epoch) only. An epoch has as many batches as a
    shuffled pass over all samples would (len(first) + len(second)) // batch_size, at least one.

    Under DDP, Lightning injects a `DistributedSampler` as `sampler`: its `num_replicas` and `rank` decide which
    batches this process takes (every num_replicas-th of the same sequence, so each batch keeps the ratio and every
    process makes the same number of steps); its own order is not used.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool = True, first: list[int] = (),
                 second: list[int] = (), first_per_batch: int = 1, seed: int = 0):
        super().__init__(sampler, batch_size, drop_last)
        if not 0 < first_per_batch < batch_size or not first or not second:
            raise ValueError(f"needs samples of both groups and 0 < first_per_batch < batch_size, got "
                             f"{len(first)}, {len(second)} samples, {first_per_batch} of {batch_size}")
        self.first, self.second, self.first_per_batch = list(first), list(second), first_per_batch
        self.seed, self.epoch = seed, 0
        self.replicas, self.rank = getattr(sampler, "num_replicas", 1), getattr(sampler, "rank", 0)
        self.batches = max((len(self.first) + len(self.second)) // batch_size, 1)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        k, rest = self.first_per_batch, self.batch_size - self.first_per_batch
        total = self.replicas * len(self)  # batches of all processes together
        # a generator per group, so that each group's order does not depend on how many batches are drawn
        first = cycled_order(len(self.first), total * k, self.generator(0))
        second = cycled_order(len(self.second), total * rest, self.generator(1))
        for b in range(self.rank, total, self.replicas):
            yield [self.first[i] for i in first[b * k:(b + 1) * k]] + \
                [self.second[i] for i in second[b * rest:(b + 1) * rest]]

    def generator(self, group: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 2 + group)

    def __len__(self) -> int:
        return max(self.batches // self.replicas, 1)
