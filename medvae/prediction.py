"""Inter-slice prediction of the base latent, for the slices of a series (formats 21 to 26).

Consecutive slices of a CT or MR volume share most of their anatomy, and so most of their
base latents: on the corpus' CT test series, 83 % of the symbols of a slice's y equal those
of the analysis of the slice before it. The base costs a lossless series file about a tenth
of its bytes and a near-lossless one up to a quarter, so a slice coded given the previous
one (:meth:`medvae.codec.Codec.compress` with ``previous``) codes its base latent against
that prediction: in each channel of y where it pays, the difference ``y − p`` instead of y,
under the hyperprior's table narrowed by an index shift (the difference is more concentrated
than y; ``p`` is the rounded analysis of the previous slice as decoded). The encoder picks,
per channel, no prediction or one of :data:`SHIFTS`, by the exact cost of each (one byte a
channel, the prediction block of the file).

Why every decoder gets the encoder's latent: ``p`` is the exact analysis (:mod:`medvae.exact`)
of the previous slice as decoded, which the decoder holds and checks against the CRC the file
records, normalised with this slice's value range and exceptions: integers every machine
computes alike. Subtracting ``p`` and shifting a table index are integer operations on them,
so the decoder adds ``p`` back to the decoded differences and synthesises the very latent the
encoder coded. The choice compares exact integer costs (the coder's interval widths through
an exact log2 table, :func:`medvae.residual.tables.interval_bits`), so the same slices give
the same file on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from compressai.entropy_models import EntropyModel
from torch import Tensor

from medvae.errors import BitstreamError
from medvae.residual.tables import interval_bits

#: Table index shifts the encoder tries for a predicted channel (the scale table of CompressAI's
#: Gaussian conditional steps by about 13 % an index: a shift of 6 is about half the scale).
SHIFTS = (0, 2, 4, 6, 8, 10, 12, 14)
#: A channel's byte in the prediction block: 0 codes y as without prediction, ``1 + i`` codes
#: ``y − p`` with the table index lowered by ``SHIFTS[i]`` (at least index 0).
NOT_PREDICTED = 0
#: Bits of a bypass group, and the largest group count one length group holds, in CompressAI's rANS coder.
_BYPASS_BITS, _BYPASS_MAX = 4, 15


def choose(symbols: Tensor, predicted: Tensor, indexes: Tensor, coder: EntropyModel) -> bytes:
    """The prediction block for y's ``symbols`` (1, C, H, W) given the ``predicted`` ones and the
    hyperprior's table ``indexes`` (both of that shape): per channel, the option that costs the
    fewest bits (:func:`symbol_costs`; ties go to the earlier option, no prediction first)."""
    costs = [symbol_costs(symbols, indexes, coder)]
    difference = symbols - predicted
    costs += [symbol_costs(difference, _shifted(indexes, shift), coder) for shift in SHIFTS]
    return bytes(np.stack(costs).argmin(axis=0).astype(np.uint8).tolist())


def symbol_costs(symbols: Tensor, indexes: Tensor, coder: EntropyModel) -> np.ndarray:
    """Per channel, what CompressAI's rANS coder spends on ``symbols`` (1, C, H, W) under table
    ``indexes``, in 2^-16 bit (exact integers): each symbol's interval and, for a value beyond
    its table, the escape's bypass groups."""
    cdf = coder._quantized_cdf.numpy().astype(np.int64)
    lengths = coder._cdf_length.reshape(-1).numpy().astype(np.int64)
    offsets = coder._offset.reshape(-1).numpy().astype(np.int64)
    index = indexes[0].numpy().astype(np.int64)
    value = symbols[0].numpy().astype(np.int64) - offsets[index]
    top = lengths[index] - 2  # the escape symbol
    escaped = (value < 0) | (value >= top)
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - top)) * escaped
    position = np.where(escaped, top, value)
    widths = cdf[index, position + 1] - cdf[index, position]
    groups = np.zeros_like(raw)
    rest = raw.copy()
    while (rest > 0).any():
        groups += rest > 0
        rest >>= _BYPASS_BITS
    bypass = escaped * (groups + 1 + groups // _BYPASS_MAX) * _BYPASS_BITS
    cost = interval_bits()[widths] + (bypass << 16)
    return cost.reshape(cost.shape[0], -1).sum(axis=1)


def read(block: bytes, channels: int) -> bytes:
    """A file's prediction block, checked: one byte per channel of y, each an option. Raises
    :class:`BitstreamError`."""
    if len(block) != channels:
        raise BitstreamError(f"corrupted base prediction block: {len(block)} bytes for a latent of {channels} channels")
    if max(block, default=0) > len(SHIFTS):
        raise BitstreamError(f"corrupted base prediction block: option {max(block)} (at most {len(SHIFTS)})")
    return bytes(block)


def coded(symbols: Tensor, predicted: Tensor, block: bytes) -> Tensor:
    """The symbols the coder writes: ``y − p`` in the predicted channels, y elsewhere."""
    return symbols - predicted * _predicted_channels(block)


def restored(decoded: Tensor, predicted: Tensor, block: bytes) -> Tensor:
    """y from the decoded symbols: :func:`coded` undone (``p`` added back where predicted)."""
    return decoded + predicted * _predicted_channels(block)


def indexes_for(indexes: Tensor, block: bytes) -> Tensor:
    """The table indexes the coder uses for (1, C, rows, W) ``indexes`` under ``block``: each
    predicted channel's lowered by its shift, at least 0."""
    shifts = torch.tensor([0 if b == NOT_PREDICTED else SHIFTS[b - 1] for b in block], dtype=indexes.dtype)
    return _shifted(indexes, shifts.view(1, -1, 1, 1))


def _shifted(indexes: Tensor, shift: int | Tensor) -> Tensor:
    return (indexes - shift).clamp_(min=0)


def _predicted_channels(block: bytes) -> Tensor:
    return torch.tensor([b != NOT_PREDICTED for b in block], dtype=torch.int32).view(1, -1, 1, 1)
