"""Bounded laws: each residual table with its mass folded onto the values a pixel can take.

A decoded pixel is clipped to bounds every decoder knows: the header's intensity range
``[lo, hi]``, or, where the base restores a pixel exactly (padding and extreme pixels), that
value alone. So of the symbols ``q`` a pixel's table offers, all those at or below
``q_low = ⌊(lower − x̃ − μ)/(2τ + 1)⌋`` decode to ``lower``, and all those at or above
``q_high = ⌈(upper − x̃ − μ)/(2τ + 1)⌉`` to ``upper``. The bounded law gives ``q_low`` the
whole mass below it and ``q_high`` the whole mass above it (with the escape, when no value
beyond the table is possible): a CT's air clipped at its lowest value, a fifth of a slice,
then costs a fraction of a bit instead of a Laplace's worth of noise.

Why it is exact and keeps the bound: the intervals are read from the integer tables of
:mod:`medvae.residual.tables` with integer comparisons only, from ``q_low`` and ``q_high``,
which are integer floor divisions of integers every decoder has; and a symbol outside
``[q_low, q_high]`` decodes to the same clipped value as the bound it is moved to, so an
encoder that moves it changes no pixel and keeps ``|x − x̂| ≤ τ``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from medvae import varint
from medvae.errors import BitstreamError
from medvae.residual import rans
from medvae.residual.tables import law_tables

#: Longest escape (35 bits: |q| up to 2^34, beyond any residual of a 32-bit intensity range over a stored mean).
ESCAPE_BYTES = 5
#: Table ``t``'s cumulative frequencies sit at ``t · _TABLE_GAP`` onwards in the flat search array.
_TABLE_GAP = 2 * rans.TOTAL


class _Tables(NamedTuple):
    width: np.ndarray  # (COUNT,) table t codes −width..width, then the escape at 2·width + 1
    flat: np.ndarray  # every table's cumulative frequencies, one table after another
    searched: np.ndarray  # ``flat`` plus t·_TABLE_GAP for table t: increasing, for one search over all tables
    first: np.ndarray  # (COUNT,) where each table starts in ``flat``
    ends: np.ndarray  # ``flat`` moved by one: ``ends[i] = flat[i + 1]``, the end of the interval that starts at ``flat[i]``


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    cdfs, lengths, offsets = law_tables()
    if any(cdf[n - 1] != rans.TOTAL for cdf, n in zip(cdfs, lengths)):
        raise AssertionError("the residual tables must be out of the rANS coder's 2^16")
    flat = np.concatenate([np.asarray(cdf[:n], np.int64) for cdf, n in zip(cdfs, lengths)])
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    searched = flat + np.repeat(np.arange(len(lengths), dtype=np.int64) * _TABLE_GAP, lengths)
    return _Tables(-np.asarray(offsets, np.int64), flat, searched, first, np.append(flat[1:], rans.TOTAL))


def table_widths() -> np.ndarray:
    """Each table's half-width w (it codes −w..w; int64, indexed as :func:`medvae.residual.tables.law_tables`)."""
    return _tables().width


def symbol_range(mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(q_low, q_high)``: the symbols that decode to the residual bounds ``lower`` and ``upper``
    (``x − x̃`` at the pixel's bounds) for integer means and quantization ``step`` (int64)."""
    return np.floor_divide(lower - mean, step), -np.floor_divide(mean - upper, step)


class BoundedLaws:
    """The bounded laws of one pass's coded pixels: table index, and symbol range from
    :func:`symbol_range` (1-D, in coding order; kept as ``q_low``, ``q_high``). Positions are table positions: symbol
    ``q`` sits at ``q + width``, the escape at ``2·width + 1``; ``low`` and ``high`` are the
    lowest and highest positions the range allows (``low``'s interval starts at 0, ``high``'s
    ends at ``top``), plus the escape where ``escape_allowed``."""

    def __init__(self, index: np.ndarray, q_low: np.ndarray, q_high: np.ndarray):
        t = _tables()
        self.q_low, self.q_high = q_low, q_high
        self.index = index.astype(np.int64)
        self.width = t.width[self.index]
        self.escape = 2 * self.width + 1
        a, b = q_low + self.width, q_high + self.width
        only_escape = (a > 2 * self.width) | (b < 0)  # every possible value lies beyond the table
        self.escape_allowed = only_escape | (a < 0) | (b > 2 * self.width)
        self.low = np.where(only_escape, self.escape, np.clip(a, 0, 2 * self.width))
        self.high = np.where(only_escape, self.escape, np.clip(b, 0, 2 * self.width))
        self.first = t.first[self.index]
        self.top = np.where(self.escape_allowed & ~only_escape, t.flat[self.first + self.escape], rans.TOTAL)

    def at(self, pixels: np.ndarray) -> BoundedLaws:
        """The laws of some of these ``pixels`` (indexes into them), without computing them again."""
        laws = object.__new__(BoundedLaws)
        for name, value in vars(self).items():
            setattr(laws, name, value[pixels])
        return laws

    def positions(self, q: np.ndarray) -> np.ndarray:
        """Table positions of symbols ``q`` (within the range): ``q + width``, or the escape."""
        return np.where(np.abs(q) <= self.width, q + self.width, self.escape)

    def intervals(self, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(start, freq)`` of each pixel's position under its bounded law."""
        return _intervals(self.first + position, self.first + self.low, self.first + self.high, self.top)

    def rows(self, lanes: int) -> rans.Lookup:
        """:data:`medvae.residual.rans.Lookup` of these laws laid out in rows of ``lanes`` (the last
        row's spare lanes read table 0's law; the decoder overrides them). Its symbols are places
        in the flat array of every table (``first`` plus the table position): the lookup, the
        decoder's inner loop, then converts nothing per row, and :func:`decode` converts the block at once."""
        rows = rans.steps(self.index.size, lanes)

        def laid_out(a: np.ndarray, fill: int) -> np.ndarray:
            return np.concatenate([a, np.full(rows * lanes - a.size, fill, np.int64)]).reshape(rows, lanes)

        t = _tables()
        # ``searched`` less its first entry (0, at most any key): the count of its entries at or
        # below a key is the place of the interval that holds the key's slot.
        searched = t.searched[1:]
        key = laid_out(self.index * _TABLE_GAP, 0)  # plus a slot: its place in ``searched``
        low, high = laid_out(self.first + self.low, 0), laid_out(self.first + self.high, 0)
        escape = laid_out(np.where(self.escape_allowed, self.first + self.escape, -1), -1)
        top = laid_out(self.top, rans.TOTAL)

        def lookup(r: int, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            found = searched.searchsorted(key[r] + slot, side="right")
            place = np.where(found == escape[r], found, np.minimum(np.maximum(found, low[r]), high[r]))
            return (place, *_intervals(place, low[r], high[r], top[r]))

        return lookup


def _intervals(place: np.ndarray, low: np.ndarray, high: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, freq)`` of symbols at ``place``s in the flat array of every table (a law's
    ``first`` plus the table position; ``low`` and ``high`` as places too): the lowest allowed
    position starts at 0 (it holds the mass below it), the highest ends at ``top`` (the mass above
    it, up to the escape's or 2^16)."""
    t = _tables()
    start = np.where(place == low, 0, t.flat[place])
    return start, np.where(place == high, top, t.ends[place]) - start


class Escapes:
    """The escaped symbols' values, in coding order: ``2·(|q| − width − 1) + (q < 0)`` as varints
    of at most :data:`ESCAPE_BYTES` bytes (only a symbol beyond its table, ``|q| > width``, is escaped)."""

    def __init__(self, data: bytes = b""):
        self.data, self.read = data, 0
        self.written = bytearray()

    def write(self, q: np.ndarray, laws: BoundedLaws, escaped: np.ndarray) -> None:
        """Append the values of the ``escaped`` symbols among ``q`` (``ValueError`` past the limit)."""
        v = q[escaped]
        self.written += varint.write(2 * (np.abs(v) - laws.width[escaped] - 1) + (v < 0), ESCAPE_BYTES)

    def take(self, laws: BoundedLaws, escaped: np.ndarray) -> np.ndarray:
        """The values of ``escaped`` symbols of these laws. Raises :class:`BitstreamError`."""
        try:
            code, self.read = varint.read(self.data, self.read, int(escaped.sum()), ESCAPE_BYTES)
        except ValueError:
            raise BitstreamError("corrupted residual stream: damaged escaped values") from None
        magnitude = (code >> 1) + laws.width[escaped] + 1
        return np.where(code & 1, -magnitude, magnitude)

    def finish(self) -> None:
        """Raise :class:`BitstreamError` unless every escaped value was read."""
        if self.read != len(self.data):
            raise BitstreamError("corrupted residual stream: escaped values left over")


def encode(encoder: rans.Encoder, escapes: Escapes, laws: BoundedLaws, q: np.ndarray) -> None:
    """Add a pass's symbols ``q`` (each within its range) to the stream and its escapes."""
    position = laws.positions(q)
    encoder.add(*laws.intervals(position))
    escapes.write(q, laws, position == laws.escape)


def decode(decoder: rans.Decoder, escapes: Escapes, laws: BoundedLaws) -> np.ndarray:
    """The symbols :func:`encode` added for these laws (int64), each within its symbol range.
    Raises :class:`BitstreamError`."""
    position = decoder.block(laws.index.size, laws.rows(decoder.lanes)) - laws.first
    escaped = position == laws.escape
    q = position - laws.width
    q[escaped] = escapes.take(laws, escaped)
    if ((q < laws.q_low) | (q > laws.q_high)).any():  # only an escape can leave the range; an encoder never writes one that does
        raise BitstreamError("corrupted residual stream: an escaped value beyond the pixel's bounds")
    return q


def cheapest(laws: BoundedLaws, q: np.ndarray, residual: np.ndarray, lower: np.ndarray, upper: np.ndarray, max_error: int) -> np.ndarray:
    """The symbols an encoder codes for quantized residuals ``q``: each moved into its range,
    then to a bound where the pixel lies within ``max_error`` of that bound and the bound's
    interval is wider (fewer bits; the pixel decodes to the bound, within the error bound)."""
    q = np.clip(q, laws.q_low, laws.q_high)
    if max_error == 0:  # lossless: a pixel has one symbol
        return q
    freq = laws.intervals(laws.positions(q))[1]
    for bound, symbol in ((lower, laws.q_low), (upper, laws.q_high)):
        near = np.flatnonzero(np.abs(residual - bound) <= max_error)  # the pixels that may move (air at its bound, say)
        some = laws.at(near)
        candidate = some.intervals(some.positions(symbol[near]))[1]
        wider = candidate > freq[near]
        moved = near[wider]
        q[moved], freq[moved] = symbol[moved], candidate[wider]
    return q
