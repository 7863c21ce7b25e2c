"""Deterministic, resumable sampling: epoch ``e`` of a run is a fixed function of (seed, e)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from medvae.errors import MedVAEError


class EpochSampler(Sampler[int]):
    """Draws ``epoch_size`` indices per epoch (reshuffled copies of the dataset), sharded by rank.

    A small corpus yields short epochs; a fixed ``epoch_size`` keeps epochs (and
    worker restarts) a sensible length. The indices depend only on (seed, epoch),
    so a resumed run sees exactly the data the uninterrupted run would have seen.

    With ``weights`` (one per item), items are drawn with replacement in proportion to them
    instead (:func:`patient_weights`, so one radiograph is not drowned by a CT volume of
    hundreds of slices).
    """

    def __init__(
        self, dataset_size: int, epoch_size: int, seed: int, rank: int = 0, world_size: int = 1, weights: Sequence[float] | None = None
    ):
        if dataset_size <= 0:
            raise ValueError("the training dataset is empty")
        if weights is not None and len(weights) != dataset_size:
            raise ValueError(f"{len(weights)} weights for {dataset_size} items")
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)
        self.dataset_size, self.seed, self.rank, self.world_size = dataset_size, seed, rank, world_size
        self.per_rank = max(1, epoch_size // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.world_size
        if self.weights is not None:
            order = torch.multinomial(self.weights, total, replacement=True, generator=g)
            return iter(order[self.rank :: self.world_size].tolist())
        copies = -(-total // self.dataset_size)
        order = torch.cat([torch.randperm(self.dataset_size, generator=g) for _ in range(copies)])[:total]
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def patient_weights(patients: Sequence[str], power: float = 1.0) -> list[float]:
    """A weight per item, ``1 / (items of its patient)^power``: with ``power`` 1 every patient is
    drawn equally often; with 0.5 a patient's share grows as the square root of its slices, so a
    lone radiograph is seen often while a CT volume of a hundred slices still counts for ten."""
    counts = Counter(patients)
    return [counts[p] ** -power for p in patients]


def sample_weights(records: Sequence[Any], power: float | None, modality_weights: Mapping[str, float] | None) -> list[float] | None:
    """Draw weights for training slices (``.patient``, ``.modality``): :func:`patient_weights` at
    ``power`` (None: every slice alike), times the weight of the slice's modality in
    ``modality_weights`` (default 1), so a modality the corpus holds few images of can be seen
    more often; None when neither applies (plain reshuffled epochs)."""
    if power is None and not modality_weights:
        return None
    if modality_weights is not None and not isinstance(modality_weights, Mapping):
        raise MedVAEError(f"data.modality_weights must be a mapping such as {{CR: 5, DX: 5}}, not {modality_weights!r}")
    present = sorted({str(r.modality).upper() for r in records})
    factors = {}
    for modality, value in (modality_weights or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise MedVAEError(f"data.modality_weights.{modality} must be a positive number, not {value!r}")
        if str(modality).upper() not in present:
            raise MedVAEError(f"data.modality_weights names {modality}, which no training slice has ({', '.join(present)})")
        factors[str(modality).upper()] = float(value)
    base = patient_weights([r.patient for r in records], power or 0.0)
    return [w * factors.get(str(r.modality).upper(), 1.0) for w, r in zip(base, records)]
