"""Series coding's key slices: which slices of a volume are coded alone.

Lossless and near-lossless coding of a series (:meth:`medvae.Codec.compress_series`, ``medvae
compress --series``) codes each slice given the one before it, except key slices, which are
coded alone: every :data:`KEY_EVERY`-th slice, so that a viewer decodes any slice after at most
``KEY_EVERY − 1`` others, and any slice that cannot follow the one before (another shape or dtype).
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError

#: :meth:`medvae.Codec.compress_series` codes every 8th slice alone: a slice decodes after at most 7 others.
KEY_EVERY = 8


def is_key_slice(index: int, image: np.ndarray, previous: np.ndarray | None, key_every: int = KEY_EVERY) -> bool:
    """Whether slice ``index`` of a series is coded alone: every ``key_every``-th slice from the
    first (0: only the first), and any slice without a ``previous`` one of its shape and dtype."""
    if isinstance(key_every, bool) or not isinstance(key_every, (int, np.integer)) or key_every < 0:
        raise InputError(f"key_every must be a whole number >= 0 (0: only the first slice is a key slice), got {key_every!r}")
    follows = previous is not None and np.shape(image) == previous.shape and np.asarray(image).dtype == previous.dtype
    return not follows or bool(key_every and index % key_every == 0)
