"""Integer CDF tables of the residual coder, built with exact steps only.

Residuals are coded under a discrete Laplace law: symbol ``k`` has probability
``F(k + ½) − F(k − ½)`` for a Laplace of scale ``b``. Table ``i`` holds the law of scale
``2^(LOG2_MIN + (i + ½)/STEPS)``; the decoder picks a table by an exact comparison
(:func:`table_index`), never by a float ``exp`` or ``log``. Formats 15 to 17 may code a pass
under the mixed law instead (:func:`mixed_tables`: a logistic core with a wide Laplace's tail,
closer to CT residuals), whose table ``i`` belongs to the same scale ``b``.

Why the tables are the same on every machine: they are computed with :mod:`decimal`,
whose ``exp`` and ``ln`` are correctly rounded by its specification (the General Decimal
Arithmetic spec, implemented in software by libmpdec); every other step, down to the
16-bit frequencies, is integer arithmetic (products, quotients, shifts). No platform ``libm`` and no SIMD path is
involved, so two decoders cannot disagree on a single frequency; a test pins their hash.
"""

from __future__ import annotations

import hashlib
from decimal import Context, Decimal
from functools import lru_cache

import numpy as np
import torch

#: log2 of the smallest and largest table scale (in stored-integer units), and tables per octave.
LOG2_MIN, LOG2_MAX, STEPS = -5, 14, 4
COUNT = (LOG2_MAX - LOG2_MIN) * STEPS
#: CDF precision: of CompressAI's rANS coder (formats 4 and 7) and of ours (:data:`medvae.residual.rans.TOTAL`, format 8).
PRECISION = 16
#: Widest table: symbols ±MAX_HALF_WIDTH; rarer values are escaped (format 8: as varints in a
#: string of their own, :class:`medvae.residual.folding.Escapes`; formats 4 and 7: in CompressAI's bypass).
MAX_HALF_WIDTH = 2048
#: Fixed-point precision of the exact base-2 logarithms (:func:`log2_fixed`).
LOG2_FRAC = 16

_DECIMAL = Context(prec=40)


@lru_cache(maxsize=1)
def interval_bits() -> np.ndarray:
    """``−log2(f/2^16)`` in 2^-16 bit, floored, for each interval width f of a rANS coder of
    :data:`PRECISION` bits (index f; ours and CompressAI's): exact integers, from :func:`log2_fixed`,
    so costs summed from them are the same on every machine."""
    total = log2_fixed(1 << PRECISION, LOG2_FRAC)
    return np.array([0] + [total - log2_fixed(f, LOG2_FRAC) for f in range(1, (1 << PRECISION) + 1)], np.int64)


def log2_fixed(n: int, frac: int = LOG2_FRAC) -> int:
    """``floor(log2(n) · 2^frac)`` for an integer ``n ≥ 1``, in integer arithmetic only.

    The classic bit-by-bit method: square the mantissa and read one bit of the logarithm
    per squaring. Every step is a Python integer operation, so the result is exact and
    the same everywhere.
    """
    if n < 1:
        raise ValueError(f"log2 of {n}")
    integer = n.bit_length() - 1
    precision = 64  # bits kept of the mantissa m ∈ [1, 2)
    m = (n << precision) >> integer if integer <= precision else n >> (integer - precision)
    result = integer
    for _ in range(frac):
        m = (m * m) >> precision
        result <<= 1
        if m >> (precision + 1):
            m >>= 1
            result |= 1
    return result


def _scale(i: int, octaves: Decimal = Decimal(0)) -> Decimal:
    """Scale of table ``i``: ``2^(LOG2_MIN + (i + ½)/STEPS + octaves)`` (correctly rounded decimal)."""
    exponent = Decimal(2 * i + 1) / Decimal(2 * STEPS) + LOG2_MIN + octaves
    return _DECIMAL.exp(_DECIMAL.multiply(exponent, _DECIMAL.ln(Decimal(2))))


#: Fixed point of the probabilities while a table is built (integers times 2^-ONE_BITS).
ONE_BITS = 64


def _pmf(scale: Decimal) -> tuple[list[int], int, int]:
    """Probabilities (integers times 2^-ONE_BITS) of symbols −w..w and the tail mass beyond,
    for a Laplace of ``scale``: two correctly rounded ``exp``, then integer products only."""
    one = 1 << ONE_BITS
    rho = int(_DECIMAL.exp(-1 / scale) * one)  # P(|k| ≥ j + ½) = ρ^(j + ½)
    beyond = int(_DECIMAL.exp(Decimal(-0.5) / scale) * one)  # mass of |k| > j (both sides), now j = 0
    centre, tail = one - beyond, []
    while len(tail) < MAX_HALF_WIDTH and beyond >> (ONE_BITS - PRECISION):  # stop below 1/65536
        tail.append((beyond * (one - rho)) >> (ONE_BITS + 1))  # one side: ½ (ρ^(j − ½) − ρ^(j + ½))
        beyond = (beyond * rho) >> ONE_BITS
    return [*reversed(tail), centre, *tail], beyond, len(tail)


#: The mixed law (:func:`_mixed_pmf`): a logistic core of scale ``s = b/√2`` (``b`` the Laplace
#: table's; the network is trained for Laplace laws, and on its CT residuals this ``s`` codes best),
#: with a share ``TAIL_WEIGHT/2^TAIL_BITS`` of a Laplace twice as wide for the outliers a
#: logistic's light tail would escape.
LOGISTIC_OCTAVES = Decimal(-1) / 2
TAIL_OCTAVES = Decimal(1)
TAIL_WEIGHT, TAIL_BITS = 1, 6


def _mixed_pmf(i: int) -> tuple[list[int], int, int]:
    """As :func:`_pmf`, for table ``i`` of the mixed law ``(1 − ε)·logistic + ε·Laplace``.

    The logistic ``F(x) = 1/(1 + e^(−x/s))`` has the mass ``t/(1 + t)`` above ``j + ½``, with
    ``t = e^(−(j + ½)/s)``; two correctly rounded ``exp`` give ``t`` at j = 0 and its ratio
    ``u = e^(−1/s)``, the Laplace part two more (:func:`_pmf`'s), and every other step is an
    integer product, quotient or shift, so the table is the same everywhere."""
    one, scale, tail_scale = 1 << ONE_BITS, _scale(i, LOGISTIC_OCTAVES), _scale(i, TAIL_OCTAVES)
    u, t = int(_DECIMAL.exp(-1 / scale) * one), int(_DECIMAL.exp(Decimal(-0.5) / scale) * one)
    rho, wide = int(_DECIMAL.exp(-1 / tail_scale) * one), int(_DECIMAL.exp(Decimal(-0.5) / tail_scale) * one)

    def mix(core: int, outliers: int) -> int:
        return ((core << TAIL_BITS) - core * TAIL_WEIGHT + outliers * TAIL_WEIGHT) >> TAIL_BITS

    side = t * one // (one + t)  # the logistic's mass beyond j on one side, now j = 0; ``wide`` the Laplace's on both
    centre, tail = mix(one - 2 * side, one - wide), []
    while len(tail) < MAX_HALF_WIDTH and mix(2 * side, wide) >> (ONE_BITS - PRECISION):  # stop below 1/65536
        t = (t * u) >> ONE_BITS
        beyond, wider = t * one // (one + t), (wide * rho) >> ONE_BITS
        tail.append(mix(side - beyond, (wide - wider) >> 1))
        side, wide = beyond, wider
    return [*reversed(tail), centre, *tail], mix(2 * side, wide), len(tail)


def _quantize(pmf: list[int]) -> list[int]:
    """A 16-bit CDF (``0 … 2^16``) in which every symbol has frequency ≥ 1 (integers only)."""
    total = 2**PRECISION
    spare, mass = total - len(pmf), sum(pmf)
    freq = [1 + p * spare // mass for p in pmf]
    freq[max(range(len(freq)), key=lambda k: (freq[k], -k))] += total - sum(freq)  # the largest takes the rest
    cdf = [0]
    for f in freq:
        cdf.append(cdf[-1] + f)
    return cdf


@lru_cache(maxsize=1)
def tables() -> tuple[list[list[int]], list[int], list[int]]:
    """``(cdfs, cdf_lengths, offsets)`` as CompressAI's rANS coder takes them: table ``i``'s
    symbols are −w..w and an escape (its tail mass) for every value beyond."""
    return _build(lambda i: _pmf(_scale(i)))


@lru_cache(maxsize=1)
def mixed_tables() -> tuple[list[list[int]], list[int], list[int]]:
    """:func:`tables` for the mixed law (:func:`_mixed_pmf`), which a pass of formats 15 to 17 may
    choose (:data:`LAWS`)."""
    return _build(_mixed_pmf)


def _build(pmf_of) -> tuple[list[list[int]], list[int], list[int]]:
    cdfs, lengths, offsets = [], [], []
    for i in range(COUNT):
        pmf, tail, width = pmf_of(i)
        cdf = _quantize([*pmf, tail])
        cdfs.append(cdf)
        lengths.append(len(cdf))
        offsets.append(-width)
    longest = max(lengths)
    return [c + [0] * (longest - len(c)) for c in cdfs], lengths, offsets


_FAMILIES = {"laplace": tables, "mixed": mixed_tables}
#: The families of laws, in the order of their tables: law ``k``'s table ``i`` is table
#: ``k·COUNT + i`` of :func:`law_tables`.
LAWS = tuple(_FAMILIES)


def family_tables(law: str) -> tuple[list[list[int]], list[int], list[int]]:
    """The tables of the family named ``law`` (one of :data:`LAWS`), as :func:`tables` gives them."""
    if law not in _FAMILIES:
        raise ValueError(f"law must be one of {LAWS}, not {law!r}")
    return _FAMILIES[law]()


def law_tables() -> tuple[list[list[int]], list[int], list[int]]:
    """Every family's tables, one family after another (:data:`LAWS`)."""
    families = [family_tables(law) for law in LAWS]
    longest = max(len(cdfs[0]) for cdfs, _, _ in families)
    return ([c + [0] * (longest - len(c)) for cdfs, _, _ in families for c in cdfs],
            [n for _, lengths, _ in families for n in lengths], [o for _, _, offsets in families for o in offsets])


def tables_digest() -> str:
    """SHA-256 of every table (a test pins it: the tables are part of the format)."""
    cdfs, lengths, offsets = tables()
    return hashlib.sha256(repr((cdfs, lengths, offsets)).encode()).hexdigest()


def table_index(log2_scale: torch.Tensor) -> torch.Tensor:
    """Table of each element for exact base-2 log scales (float64 multiples of 2^-LOG2_FRAC or
    of a finer power of two): ``clamp(floor((log2 b − LOG2_MIN) · STEPS), 0, COUNT − 1)``.
    Subtracting an integer and multiplying by a power of two are exact, and so is ``floor``."""
    return torch.floor((log2_scale - LOG2_MIN) * STEPS).clamp_(0, COUNT - 1).to(torch.int32)
