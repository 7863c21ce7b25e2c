"""Inter-slice prediction of the base latent, for the slices of a series (formats 21 to 26).

Consecutive slices of a CT or MR volume share most of their anatomy, and so most of their
base latents: on the corpus' CT test series, 83 % of the symbols of a slice's y equal those
of the analysis of the slice before it. The base costs a lossless series file about a tenth
of its bytes and a near-lossless one up to a quarter, so a slice coded given the previous
one (:meth:`medvae.codec.Codec.compress` with ``previous``) codes its base latent against
that prediction: in each channel of y, and range of its scales, where it pays, the difference
``y − p`` instead of y, under the hyperprior's table narrowed by an index shift (the difference
is more concentrated than y; ``p`` is the rounded analysis of the previous slice as decoded). The encoder picks,
per channel and per bucket of the table index (:data:`BUCKET_CUTS`), no prediction or one of
:data:`SHIFTS`, by the exact cost of each (a nibble each, the prediction block of the file).

Why every decoder gets the encoder's latent: ``p`` is the exact analysis (:mod:`medvae.exact`)
of the previous slice as decoded, which the decoder holds and checks against the CRC the file
records, clipped to this slice's value range and normalised with it (both in the header):
integers every machine computes alike. Each symbol's bucket comes from its table index, which
the decoder has from the hyperprior before it decodes y; subtracting ``p`` and shifting a table
index are integer operations, so the decoder adds ``p`` back to the decoded differences and
synthesises the very latent the encoder coded. The choice compares exact integer costs (the coder's interval widths through
an exact log2 table, :func:`medvae.residual.tables.interval_bits`), so the same slices give
the same file on every machine.

The hyper-latent z is predicted too (2026-12-06): 96 % of a CT series slice's z symbols equal
those of the previous slice's analysis, which the decoder computes anyway (the same analysis
gives p). Where it pays, the file codes ``z − z_p`` under one table of the Gaussian conditional
(its index, :func:`choose_hyper`, a byte at the block's end) instead of z under the entropy
bottleneck: about 150 bytes instead of 400 on the corpus' CT test series. Why it is exact: ``z_p``
is the exact analysis' z, rounded as z is, of the slice the decoder holds (the integers every
machine computes alike, as ``p``); the decoder adds it back to the decoded differences, an integer
sum, and the table is named by the file; so the decoder's z, and the scales it gives y, are the
encoder's.

A series slice also quantizes y more coarsely (:func:`base_step`, recorded in the block): the
series residual model reads the previous slices, so a cheaper base pays. The step is a multiple
of 1/4, so the decoder's ``step · symbol`` is exact; the symbols (y's and p's) are integer floor
divisions of the exact analysis' integers, exact on every device (a float division by a scalar is
not: a GPU multiplies by the reciprocal); the table choice compares ``4·scale`` (exact) with each
table entry times the step in quarters, one IEEE product that every device rounds alike.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from medvae.bitstream import STEPS, UNIT_STEP  # y's steps, which the container records
from medvae.errors import BitstreamError
from medvae.residual.tables import interval_bits

if TYPE_CHECKING:
    from compressai.entropy_models import EntropyModel

#: Table index shifts the encoder tries for predicted symbols (the scale table of CompressAI's
#: Gaussian conditional steps by about 13 % an index: a shift of 6 is about half the scale).
SHIFTS = tuple(range(15))
#: The symbols of a channel fall into buckets by their table index (before any shift), cut at these
#: indexes: the scales of the difference ``y − p`` shrink by other factors where y's scale is small
#: (flat anatomy, which the slice before predicts well) than where it is large (edges that move).
BUCKET_CUTS = (12, 24)
BUCKETS = len(BUCKET_CUTS) + 1
#: A (channel, bucket)'s option, a 4-bit nibble of the prediction block: 0 codes y as without
#: prediction, ``1 + s`` codes ``y − p`` with the table index lowered by ``SHIFTS[s]`` (at least 0).
NOT_PREDICTED = 0
#: Bits of a bypass group, and the largest group count one length group holds, in CompressAI's rANS coder.
_BYPASS_BITS, _BYPASS_MAX = 4, 15


class Prediction(NamedTuple):
    """What a series slice's base latent is coded against (:func:`read`'s block, over the analysis
    of the previous slice): y's predicted symbols at the slice's step and the block's options for
    them; z's predicted symbols and the table its difference is coded with (None: z coded alone)."""

    y: Tensor
    options: np.ndarray
    z: Tensor
    hyper: int | None = None


def base_step(max_error: int) -> int:
    """The quantization step of a series slice's base latent, in quarters, at bound ``max_error``
    (a quantizer's τ for optimized files). A slice coded given the ones before leaves less to its
    base: the series residual model reads the previous slices, and the prediction codes y's
    agreement with them in few bits, so a coarser base costs the residual less than it saves;
    the more so the larger the bound (measured on the CT test series, docs/lossless.md)."""
    return 5 if max_error == 0 else 6 if max_error <= 2 else 7


def rule_step(least: int, image: np.ndarray, value_range: tuple[int, int], noise: bool = True) -> int:
    """y's step by the encoder's rule: ``least`` (the unit, or a series slice's :func:`base_step`)
    or, with ``noise``, the image's :func:`noise_step` where coarser."""
    return max(least, noise_step(image, value_range)) if noise else least


#: :func:`noise_step`'s rule: the step q (in quarters) is the nearest integer to
#: ``cbrt(NOISE_SCALE · noise / span)``, within ``UNIT_STEP`` and :data:`NOISE_STEP_LIMIT`.
NOISE_SCALE = 2**14
NOISE_STEP_LIMIT = 12


def noise_step(image: np.ndarray, value_range: tuple[int, int]) -> int:
    """The quantization step of y, in quarters, that an image's noise calls for under a residual
    layer (a slice coded alone takes it; a series slice the coarser of it and :func:`base_step`): the
    noisier the image against its intensity span, the coarser. The residual layer codes what the
    base leaves, noise above all, and base detail finer than the noise buys the residual nothing
    (docs/lossless.md, "The step of y for a slice coded alone"): on the corpus, clean CT slices
    code smallest at the unit step, noisy ones at 1.25 to 1.75, MR at 2.5 or more.

    The noise is the median magnitude of the image's 4-neighbour Laplacian over its pixels above
    a twentieth of the span (the body, not the air); the step ``q`` is the nearest integer to
    ``cbrt(2^14 · noise / span)`` (``log2`` of the step grows by a third of that of the noise
    ratio: the unit step at a ratio of 2^-8 or less), clamped to 4 … :data:`NOISE_STEP_LIMIT`.
    Integer arithmetic throughout, so every machine picks the same step for the same image (the
    decoder reads it from the file: it never computes this)."""
    lo, hi = value_range
    span = hi - lo
    x = np.clip(image, lo, hi).astype(np.int64)
    if span <= 0 or min(x.shape) < 3:
        return UNIT_STEP
    centre = x[1:-1, 1:-1]
    laplacian = np.abs(4 * centre - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:])
    body = laplacian[centre > lo + span // 20]
    if body.size == 0:
        return UNIT_STEP
    noise = int(np.partition(body, body.size // 2)[body.size // 2])  # the upper median, an integer
    step = UNIT_STEP
    while step < NOISE_STEP_LIMIT and (2 * step + 1) ** 3 * span <= 8 * NOISE_SCALE * noise:  # step + ½ ≤ cbrt(…)
        step += 1
    return step


def choose(symbols: Tensor, predicted: Tensor, indexes: Tensor, coder: EntropyModel) -> np.ndarray:
    """The options for y's ``symbols`` (1, C, H, W) given the ``predicted`` ones and the
    hyperprior's table ``indexes`` (both of that shape): per channel and bucket, (C, :data:`BUCKETS`),
    the option that costs the fewest bits (:func:`symbol_costs`; ties go to the earlier option, no
    prediction first). All :data:`NOT_PREDICTED` where no symbol gains from the prediction."""
    channels = indexes.shape[1]
    member = [(bucket_of(indexes)[0] == b).reshape(channels, -1).numpy() for b in range(BUCKETS)]
    costs = [symbol_costs(symbols, indexes, coder)]
    difference = symbols - predicted
    costs += [symbol_costs(difference, _shifted(indexes, shift), coder) for shift in SHIFTS]
    per_bucket = np.stack([np.stack([(c.reshape(channels, -1) * m).sum(axis=1) for m in member], 1) for c in costs])
    return per_bucket.argmin(axis=0)


def symbol_costs(symbols: Tensor, indexes: Tensor, coder: EntropyModel) -> np.ndarray:
    """What CompressAI's rANS coder spends on each of ``symbols`` (1, C, H, W) under table
    ``indexes``, as (C, H, W) integers in 2^-16 bit (exact): each symbol's interval and, for a value
    beyond its table, the escape's bypass groups."""
    bits, offsets, tops = _table_costs(coder)
    index = indexes[0].numpy().astype(np.int64)
    value = symbols[0].numpy().astype(np.int64) - offsets[index]
    top = tops[index]  # the escape symbol
    escaped = (value < 0) | (value >= top)
    cost = bits[index, np.where(escaped, top, value)]
    if escaped.any():  # rare: the bypass groups of the escaped values only
        where = np.flatnonzero(escaped)
        v, t = value.reshape(-1)[where], top.reshape(-1)[where]
        rest = np.where(v < 0, -2 * v - 1, 2 * (v - t))
        groups = np.zeros_like(rest)
        while (rest > 0).any():
            groups += rest > 0
            rest >>= _BYPASS_BITS
        cost.reshape(-1)[where] += ((groups + 1 + groups // _BYPASS_MAX) * _BYPASS_BITS) << 16
    return cost


def _table_costs(coder: EntropyModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A coder's tables as :func:`symbol_costs` reads them: the bits of every (table, position)'s
    interval in 2^-16 bit, each table's offset, and each table's escape position (computed once per
    set of tables: a series slice's choice costs 16 symbol costs)."""
    return _costs_of_tables(coder._quantized_cdf, coder._cdf_length, coder._offset)


@functools.lru_cache(maxsize=8)
def _costs_of_tables(cdf: Tensor, lengths: Tensor, offsets: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Keyed by the tensors themselves (by identity): a coder whose tables are rebuilt has new ones.
    cdf = cdf.numpy().astype(np.int64)
    widths = np.maximum(cdf[:, 1:] - cdf[:, :-1], 1)  # past a table's end (never read): any valid width
    tops = lengths.reshape(-1).numpy().astype(np.int64) - 2
    return interval_bits()[widths], offsets.reshape(-1).numpy().astype(np.int64), tops


def choose_hyper(symbols: Tensor, predicted: Tensor, bottleneck: EntropyModel, conditional: EntropyModel) -> int | None:
    """The table of ``conditional`` under which z's ``symbols`` less the ``predicted`` ones (both
    (1, C, H, W)) cost the fewest bits (:func:`symbol_costs`, exact; the lowest index on a tie),
    if fewer than ``symbols`` cost under the entropy ``bottleneck`` (each channel its table); else None."""
    channels = torch.arange(symbols.shape[1], dtype=torch.int32)[None, :, None, None].expand(symbols.shape)
    alone = symbol_costs(symbols, channels, bottleneck).sum()
    values, counts = torch.unique(symbols - predicted, return_counts=True)  # few distinct differences: cost each once
    values, counts = values.view(1, 1, 1, -1), counts.numpy()
    tables = conditional._quantized_cdf.size(0)
    costs = [symbol_costs(values, torch.full(values.shape, i, dtype=torch.int32), conditional)[0, 0] @ counts for i in range(tables)]
    best = int(np.argmin(costs))
    return best if costs[best] < alone else None


def bucket_of(indexes: Tensor) -> Tensor:
    """Each symbol's bucket (:data:`BUCKET_CUTS`) from its table index before any shift."""
    return torch.bucketize(indexes, torch.tensor(BUCKET_CUTS, dtype=indexes.dtype), right=True)


def pack(options: np.ndarray, step: int = UNIT_STEP, hyper: int | None = None) -> bytes:
    """(C, :data:`BUCKETS`) options, y's ``step`` and z's table ``hyper`` as the prediction block:
    two nibbles a byte, low first, in channel-major order (a trailing 0 nibble where their count
    is odd), then, for a step other than the unit or a predicted z, one byte: the step in quarters
    (the release before last wrote none), then, for a predicted z, one byte: its table (the
    release before wrote none, and refuses such a block as damaged)."""
    nibbles = options.astype(np.uint8).reshape(-1)
    nibbles = np.concatenate([nibbles, np.zeros(len(nibbles) % 2, np.uint8)])
    tail = bytes([step]) if step != UNIT_STEP or hyper is not None else b""
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes() + tail + (bytes([hyper]) if hyper is not None else b"")


def read(block: bytes, channels: int) -> tuple[np.ndarray, int, int | None]:
    """A file's prediction block as (channels, :data:`BUCKETS`) options, y's step and z's table
    (None: z coded alone), checked. Raises :class:`BitstreamError`."""
    count = channels * BUCKETS
    size = (count + 1) // 2
    if len(block) not in (size, size + 1, size + 2):
        raise BitstreamError(f"corrupted base prediction block: {len(block)} bytes for a latent of {channels} channels")
    step = block[size] if len(block) > size else UNIT_STEP
    hyper = block[size + 1] if len(block) > size + 1 else None
    if step not in STEPS or (len(block) == size + 1 and step == UNIT_STEP):
        raise BitstreamError(f"corrupted base prediction block: step {step}/{UNIT_STEP}")
    nibbles = _nibbles(block[:size])
    if count % 2 and nibbles[-1]:
        raise BitstreamError("corrupted base prediction block: a nonzero padding nibble")
    if not nibbles.any() and step == UNIT_STEP and hyper is None:
        raise BitstreamError("corrupted base prediction block: no symbol predicted")
    return nibbles[:count].reshape(channels, BUCKETS).astype(np.int64), step, hyper


def predicted_count(block: bytes) -> int:
    """How many (channel, bucket) pairs a prediction block predicts (its nonzero nibbles; ``medvae
    info``, which has no weights to read the channel count from: y's channels are even in every
    model here, so the nibbles fill a multiple of 3 bytes, and the step and z's table bytes are the
    one or two left over)."""
    return int(np.count_nonzero(_nibbles(block[: len(block) // 3 * 3])))


def block_step(block: bytes) -> int:
    """The step a prediction block records (:func:`predicted_count`'s reading of its length)."""
    return block[len(block) // 3 * 3] if len(block) % 3 else UNIT_STEP


def block_hyper(block: bytes) -> int | None:
    """The table z's difference is coded with, if the block predicts z (:func:`predicted_count`'s reading)."""
    return block[-1] if len(block) % 3 == 2 else None


def _nibbles(block: bytes) -> np.ndarray:
    """A block's nibbles in :func:`pack`'s order."""
    raw = np.frombuffer(block, np.uint8)
    return np.stack([raw & 15, raw >> 4], 1).reshape(-1)


def coded(symbols: Tensor, predicted: Tensor, options: np.ndarray, indexes: Tensor) -> Tensor:
    """The symbols the coder writes: ``y − p`` where the symbol's (channel, bucket) is predicted,
    y elsewhere (``indexes``: the hyperprior's, before any shift)."""
    return symbols - predicted * _choice(options, indexes)[0]


def restored(decoded: Tensor, predicted: Tensor, options: np.ndarray, indexes: Tensor) -> Tensor:
    """y from the decoded symbols: :func:`coded` undone (``p`` added back where predicted)."""
    return decoded + predicted * _choice(options, indexes)[0]


def indexes_for(indexes: Tensor, options: np.ndarray) -> Tensor:
    """The table indexes the coder uses for (1, C, rows, W) hyperprior ``indexes`` under ``options``:
    each predicted symbol's lowered by its (channel, bucket)'s shift, at least 0."""
    return _shifted(indexes, _choice(options, indexes)[1])


def _choice(options: np.ndarray, indexes: Tensor) -> tuple[Tensor, Tensor]:
    """Per symbol of ``indexes`` (1, C, H, W): whether it is predicted (int32 0/1) and its shift."""
    table = torch.from_numpy(np.asarray(options, np.int64))  # (C, BUCKETS)
    channels = torch.arange(indexes.shape[1])[None, :, None, None]
    option = table[channels, bucket_of(indexes).long()]
    shifts = torch.tensor((0, *SHIFTS), dtype=indexes.dtype)[option]
    return (option != NOT_PREDICTED).to(torch.int32), shifts


def _shifted(indexes: Tensor, shift: int | Tensor) -> Tensor:
    return (indexes - shift).clamp_(min=0)
