"""Series coding's key slices: which slices of a volume are coded alone.

Lossless and near-lossless coding of a series (:meth:`medvae.Codec.compress_series`, ``medvae
compress --series``) codes each slice given the one before it, except key slices, which are
coded alone: every :data:`KEY_EVERY`-th slice, so that a viewer decodes any slice after at most
``KEY_EVERY − 1`` others, and any slice that cannot follow the one before (another shape or dtype).
"""

from __future__ import annotations

import numpy as np

from medvae import bitstream
from medvae.errors import InputError

#: :meth:`medvae.Codec.compress_series` codes every 8th slice alone: a slice decodes after at most 7 others.
KEY_EVERY = 8
#: Longest chain of files, each coded given the one before, that ``medvae decompress`` follows back
#: to a key slice (a longer one is refused as forged), so ``medvae compress --key-every`` goes up to it.
MAX_CHAIN = 4096
#: The most previous slices a series residual model reads (:attr:`medvae.residual.model.ResidualModel.previous`).
MAX_PREVIOUS = 2


def is_key_slice(index: int, image: np.ndarray, previous: np.ndarray | None, key_every: int = KEY_EVERY) -> bool:
    """Whether slice ``index`` of a series is coded alone: every ``key_every``-th slice from the
    first (0: only the first), and any slice without a ``previous`` one of its shape and dtype."""
    if isinstance(key_every, bool) or not isinstance(key_every, (int, np.integer)) or key_every < 0:
        raise InputError(f"key_every must be a whole number >= 0 (0: only the first slice is a key slice), got {key_every!r}")
    follows = previous is not None and np.shape(image) == previous.shape and np.asarray(image).dtype == previous.dtype
    return not follows or bool(key_every and index % key_every == 0)


def previous_planes(before: list[np.ndarray], count: int) -> np.ndarray:
    """The ``count`` previous slices a series model reads, as one (count, H, W) array, nearest
    first, from the decoded slices ``before`` (nearest first, at least one): where the series
    holds fewer since its key slice (the slice right after it has one), the farthest is repeated,
    so every decoder builds the same planes from the same decoded slices."""
    if not before:
        raise InputError("a slice coded given its series needs at least the slice before it")
    chosen = list(before[:count]) + [before[min(len(before), count) - 1]] * max(0, count - len(before))
    return np.stack(chosen)


def as_slices(previous) -> list[np.ndarray] | None:
    """``previous`` as :meth:`medvae.Codec.compress` and ``decompress`` take it: None, one slice
    (a 2-D array), or the slices before this one, nearest first (a sequence of 2-D arrays, or a
    3-D array), as a list of 2-D arrays (None for None)."""
    if previous is None:
        return None
    if isinstance(previous, (list, tuple)) and all(isinstance(p, np.ndarray) for p in previous):
        slices = list(previous)
    else:
        array = np.asarray(previous)
        slices = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else []
    if not slices or any(s.ndim != 2 for s in slices):
        raise InputError("previous= takes the slice before this one (2-D), or the slices before it, nearest first")
    return slices


def read_next(pixels: np.ndarray, offered: list[np.ndarray] | None, data: bytes) -> list[np.ndarray]:
    """The slices the next slice of a series is coded given, nearest first: this slice's decoded
    ``pixels``, then those its file ``data`` was coded given (``offered``, None for a key slice;
    none if the file records no previous slice: a lossy rate-control choice reads none, and a
    decoder's chain stops at it), at most :data:`MAX_PREVIOUS`. What
    :meth:`medvae.Codec.compress_series` and ``medvae compress --series`` pass along."""
    read = offered if offered is not None and bitstream.read_header(data).previous_crc is not None else None
    return [pixels, *(read or [])][:MAX_PREVIOUS]
