"""Deterministic, resumable sampling: epoch ``e`` of a run is a fixed function of (seed, e)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Draws ``epoch_size`` indices per epoch (reshuffled copies of the dataset), sharded by rank.

    A small corpus yields short epochs; a fixed ``epoch_size`` keeps epochs (and
    worker restarts) a sensible length. The indices depend only on (seed, epoch),
    so a resumed run sees exactly the data the uninterrupted run would have seen.
    """

    def __init__(self, dataset_size: int, epoch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if dataset_size <= 0:
            raise ValueError("the training dataset is empty")
        self.dataset_size, self.seed, self.rank, self.world_size = dataset_size, seed, rank, world_size
        self.per_rank = max(1, epoch_size // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.world_size
        copies = -(-total // self.dataset_size)
        order = torch.cat([torch.randperm(self.dataset_size, generator=g) for _ in range(copies)])[:total]
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
