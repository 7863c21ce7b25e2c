"""Per-image adaptation of the residual laws, fitted by the encoder (formats 12 to 17).

The residual network is trained once, on a few volumes; a slice from another scanner or
another reconstruction kernel has residuals whose neighbours and base predict them a little
differently. So the encoder fits, pass by pass, a linear correction of the network's integer
mean from what every decoder has at that pass (:func:`features`: the mean itself, the decoded
residuals of the 5×5 neighbourhood that earlier passes decoded, the base's second differences,
a series' previous slices less the base) and a shift of the table index (the scale by
2^(k/4)), as LS-based adaptive predictors of lossless image coding fit theirs per image, and
the family of the law (formats 15 to 17: :data:`medvae.residual.tables.LAWS`, the Laplace law the
network was trained for or the mixed law whose logistic core fits CT residuals better), and
whether the pass keeps each mean within its table's reach of the pixel's bounds
(:func:`within_reach`; flagged where that clip changes a coded pixel's mean). It
keeps each part only where it codes the pass for less, the block's own bytes counted (and,
near-losslessly, the pass's squared error weighed in bits), and writes them as a third
residual string (:class:`Adaptation`).

Why every decoder computes the same laws: the features are integers clipped to ±2^20 and
the coefficients int16, so each product is below 2^35 and a pass's sum of at most 34 of them
below 2^41, computed in int64 and rounded by one arithmetic shift; the index shift is an
integer addition clamped to the tables, and the family an integer offset into the tables of
:func:`medvae.residual.tables.law_tables`, built with exact steps only. The decoder only reads the fit's result; the fit is
reproducible all the same (exact normal equations, :func:`_fit_mean`; exact integer costs), so
the same image gives the same file on every machine.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from medvae import least_squares
from medvae.errors import BitstreamError
from medvae.residual import folding
from medvae.residual.model import PHASES
from medvae.residual.tables import COUNT, LAWS, LOG2_MIN, STEPS

#: The decoded residuals a pass reads lie within this many pixels (rows and columns) of its pixel.
RADIUS = 2
#: Second differences of the base, ``x̃(p + δ) + x̃(p − δ) − 2·x̃(p)``, one per direction δ.
CURVATURES = ((0, 1), (0, 2), (1, -1), (1, 0), (1, 1), (2, 0))
#: Features and coefficients are kept within these (int64 sums stay below 2^41).
FEATURE_LIMIT = 2**20
COEFFICIENT_LIMIT = 2**15 - 1
#: Largest arithmetic shift of a pass's coefficients (their resolution, 2^-SHIFT_LIMIT).
SHIFT_LIMIT = 30
#: A pass's header byte for "no mean correction".
_NO_CORRECTION = 255
#: Index shifts the encoder tries (quarter octaves of the scale).
INDEX_SHIFTS = range(-4, 5)
#: The fit reads at most this many pixels of a pass (every n-th row of larger images), and
#: reweights its least squares this many times.
FIT_PIXELS = 2**15
FIT_ROUNDS = 4
_FIT_LIMIT = 2**11
#: Bit costs are integers in units of 2^-COST_FRAC bit.
COST_FRAC = 16
_PASS = struct.Struct("<bB")  # index shift, coefficient shift (or _NO_CORRECTION)
#: The family the encoder tries first: the mixed law (:data:`medvae.residual.tables.LAWS`).
MIXED = LAWS.index("mixed")
#: Bits of a pass in the block's first byte (formats 15 to 17): pass p's law at bit 2p, its
#: :attr:`PassAdaptation.reach` at bit 2p + 1 (a release that knew no reach read both as the law).
_LAW_BITS = 2
_REACH_BIT = 2
assert len(LAWS) == 2, "one bit names a pass's law"


def neighbours(p: int) -> tuple[tuple[int, int], ...]:
    """Offsets (row, column) within :data:`RADIUS` of a pixel of pass ``p`` whose pixels earlier
    passes decoded (the same for every pixel of the pass: they depend on parities only)."""
    phase, earlier = PHASES[p], set(PHASES[:p])
    return tuple(
        (dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1)
        if ((phase[0] + dy) % 2, (phase[1] + dx) % 2) in earlier
    )


def feature_count(p: int, previous: int = 0) -> int:
    """Features of pass ``p`` for a model reading ``previous`` slices: the mean, a constant,
    the decoded neighbours, the base's curvatures and each previous slice less the base."""
    return 2 + len(neighbours(p)) + len(CURVATURES) + previous


def features(
    p: int, mean: np.ndarray, decoded: np.ndarray, base: np.ndarray, previous: np.ndarray | None, row_step: int = 1
) -> Iterator[np.ndarray]:
    """The features of pass ``p``'s pixels (each as int64 of ``mean``'s shape, clipped to
    ±:data:`FEATURE_LIMIT`), in the order of :func:`feature_count`. ``decoded``: the (even-sized)
    decoded residual so far (zero where not yet decoded), ``base`` the even-sized base and
    ``previous`` a series' (n, H, W) previous slices (or None); outside the image the residual
    reads 0 and the base its nearest pixel. ``row_step``: only every ``row_step``-th row of the
    pass (of ``mean[::row_step]``'s shape), as the fit reads them."""
    rows, cols = mean.shape
    phase = PHASES[p]
    pad = 2 * RADIUS
    mean = mean[::row_step]

    def grid(a: np.ndarray, dy: int, dx: int) -> np.ndarray:  # a(p + δ) at the pass's pixels
        r0, c0 = pad + phase[0] + dy, pad + phase[1] + dx
        return a[r0 : r0 + 2 * rows : 2 * row_step, c0 : c0 + 2 * cols : 2].astype(np.int64)

    wide_residual = np.pad(decoded, pad)
    wide_base = np.pad(base, pad, mode="edge")
    centre = grid(wide_base, 0, 0)
    clip = lambda a: np.clip(a, -FEATURE_LIMIT, FEATURE_LIMIT)  # noqa: E731
    yield clip(mean.astype(np.int64))
    yield np.ones(mean.shape, np.int64)
    for dy, dx in neighbours(p):
        yield clip(grid(wide_residual, dy, dx))
    for dy, dx in CURVATURES:
        yield clip(grid(wide_base, dy, dx) + grid(wide_base, -dy, -dx) - 2 * centre)
    for plane in () if previous is None else previous:
        yield clip(grid(np.pad(plane, pad, mode="edge"), 0, 0) - centre)


class PassAdaptation(NamedTuple):
    """One pass's adaptation: a table index shift, the mean's correction
    ``⌊(Σ coefficient·feature + 2^(shift − 1))/2^shift⌋`` (no correction: ``coefficients`` None),
    the law's family (an index into :data:`medvae.residual.tables.LAWS`), and ``reach``: whether
    each mean is then kept within the table's reach of its pixel's bounds (:func:`within_reach`)."""

    index_shift: int = 0
    shift: int = 0
    coefficients: np.ndarray | None = None
    law: int = 0
    reach: bool = False

    def apply(self, planes: Callable[..., Iterator[np.ndarray]], mean: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The adapted (mean, index) of a pass; ``planes`` gives its features (:func:`features`).
        The index is one of :func:`medvae.residual.tables.law_tables`: the law's family's table."""
        index = of_law(shifted(index, self.index_shift), self.law)
        if self.coefficients is None:
            return mean, index
        total = np.zeros(mean.shape, np.int64)
        for weight, plane in zip(self.coefficients.tolist(), planes(), strict=True):
            if weight:
                total += weight * plane
        if self.shift:
            total = (total + (1 << (self.shift - 1))) >> self.shift  # an arithmetic shift: the floor
        return mean.astype(np.int64) + total, index

    def to_bytes(self) -> bytes:
        if self.coefficients is None:
            return _PASS.pack(self.index_shift, _NO_CORRECTION)
        return _PASS.pack(self.index_shift, self.shift) + self.coefficients.astype("<i2").tobytes()


def within_reach(mean: np.ndarray, index: np.ndarray, low: np.ndarray, high: np.ndarray, step: int) -> np.ndarray:
    """``mean`` clipped to [low − step·w, high + step·w], w the half-width of each pixel's table
    (``index``, one of :func:`medvae.residual.tables.law_tables`), ``low`` and ``high`` its residual
    bounds and ``step`` = 2τ + 1: so every pixel's possible symbols meet its table.

    Why it is needed, and exact: a mean farther than that from the pixel's bounds puts every value
    the pixel can take beyond its table, where each costs an escape (a byte or more) even when the
    pixel has a single likely value, such as air at the lowest value a little below a mean the network
    set too low. Clipped, the nearest bound's symbol is the table's end, which the bounded law gives
    the table's whole mass beyond it. It is integer arithmetic on what every decoder has (the table
    widths are shipped integers), so the decoder clips exactly as the encoder did."""
    reach = step * folding.table_widths()[index]
    return np.clip(mean, low - reach, high + reach)


def shifted(index: np.ndarray, shift: int) -> np.ndarray:
    """Table indexes moved by ``shift`` (the scale times 2^(shift/4)), clamped to the tables."""
    return np.clip(index.astype(np.int64) + shift, 0, COUNT - 1) if shift else index


def of_law(index: np.ndarray, law: int) -> np.ndarray:
    """Table indexes (of one family, 0 to COUNT − 1) as the tables of family ``law`` in
    :func:`medvae.residual.tables.law_tables`, which holds each family's COUNT tables in turn."""
    return index.astype(np.int64) + law * COUNT if law else index


class Adaptation(NamedTuple):
    """The four passes' adaptations, in the order of :data:`PHASES`: the third residual string.
    Formats 15 to 17 write it with the passes' laws in a first byte (``laws``); formats 12 to 14
    wrote it without, every pass under the Laplace law."""

    passes: tuple[PassAdaptation, ...]

    @property
    def active(self) -> bool:
        """Whether any pass changes its laws (a file without a change carries no block)."""
        return any(a.index_shift or a.coefficients is not None or a.law or a.reach for a in self.passes)

    def to_bytes(self, laws: bool = True) -> bytes:
        """The block; ``laws``: with the byte of the passes' laws and reach (formats 15 to 17)."""
        if not laws and any(a.law or a.reach for a in self.passes):
            raise ValueError("a block without its laws byte holds Laplace laws only, without reach")
        first = bytes([sum((a.law | _REACH_BIT * a.reach) << (_LAW_BITS * p) for p, a in enumerate(self.passes))]) if laws else b""
        return first + b"".join(a.to_bytes() for a in self.passes)

    @classmethod
    def from_bytes(cls, data: bytes, previous: int = 0, laws: bool = True) -> Adaptation:
        """Parse a block written for a model reading ``previous`` slices, with the byte of its
        laws (``laws``; formats 15 to 17) or without (formats 12 to 14). Raises :class:`BitstreamError`."""
        fields = [0] * len(PHASES)  # each pass's law | _REACH_BIT · reach
        pos = 0
        if laws:
            if not data:
                raise BitstreamError("corrupted residual adaptation block (truncated)")
            fields = [(data[0] >> (_LAW_BITS * p)) & ((1 << _LAW_BITS) - 1) for p in range(len(PHASES))]
            pos = 1
        passes = []
        for p in range(len(PHASES)):
            if pos + _PASS.size > len(data):
                raise BitstreamError("corrupted residual adaptation block (truncated)")
            index_shift, shift = _PASS.unpack_from(data, pos)
            pos += _PASS.size
            if abs(index_shift) >= COUNT or (shift > SHIFT_LIMIT and shift != _NO_CORRECTION):
                raise BitstreamError("corrupted residual adaptation block")
            coefficients = None
            if shift != _NO_CORRECTION:
                n = feature_count(p, previous)
                if pos + 2 * n > len(data):
                    raise BitstreamError("corrupted residual adaptation block (truncated)")
                coefficients = np.frombuffer(data, "<i2", n, pos).astype(np.int64)
                pos += 2 * n
            law, reach = fields[p] & (_REACH_BIT - 1), bool(fields[p] & _REACH_BIT)
            passes.append(PassAdaptation(index_shift, 0 if coefficients is None else shift, coefficients, law, reach))
        if pos != len(data):
            raise BitstreamError("corrupted residual adaptation block (bytes left over)")
        return cls(tuple(passes))


def fit(
    planes: Callable[..., Iterator[np.ndarray]], mean: np.ndarray, index: np.ndarray, residual: np.ndarray,
    inside: np.ndarray, cost: Callable[[np.ndarray, np.ndarray], int],
) -> tuple[PassAdaptation, np.ndarray, np.ndarray]:
    """The adaptation of one pass that codes it in the fewest bits, block bytes counted (a pass
    left as it is when nothing pays), and the (mean, index) it gives. ``planes(row_step=1)``: the
    pass's features (:func:`features`, every ``row_step``-th row). ``residual``: the pass's
    true residuals; ``inside``: the pixels whose residual lies strictly between their bounds (the
    fit reads those: at a bound the residual is censored); ``cost(mean, index)``: the pass's bits
    under those laws (``index`` one of :func:`medvae.residual.tables.law_tables`; near-losslessly
    plus its squared error weighed in bits), in units of 2^-:data:`COST_FRAC` bit (an exact
    integer, so every machine makes the same choices).

    The mean and the index shift are chosen under the mixed law (:data:`MIXED`), which codes
    nearly every pass for less; the pass then keeps the Laplace law where that costs less at the
    chosen shift."""
    byte = 8 << COST_FRAC
    mixed = lambda m, i: cost(m, of_law(i, MIXED))  # noqa: E731
    best, best_mean, best_bits = PassAdaptation(), mean, mixed(mean, index) + byte * _PASS.size
    corrected = _fit_mean(planes, mean, index, residual, inside)
    if corrected is not None:
        corrected_mean, _ = corrected.apply(planes, mean, index)
        bits = mixed(corrected_mean, index) + byte * len(corrected.to_bytes())
        if bits < best_bits:
            best, best_mean, best_bits = corrected, corrected_mean, bits
    index_shift, bits = _best_index_shift(best_mean, index, mixed, best_bits - byte * len(best.to_bytes()))
    law = MIXED if bits < cost(best_mean, shifted(index, index_shift)) else 0
    return best._replace(index_shift=index_shift, law=law), best_mean, of_law(shifted(index, index_shift), law)


def _best_index_shift(mean: np.ndarray, index: np.ndarray, cost: Callable[[np.ndarray, np.ndarray], int], unshifted: int) -> tuple[int, int]:
    """The index shift of :data:`INDEX_SHIFTS` that codes the pass in the fewest bits, and those
    bits (``unshifted``: the bits without a shift): from 0 outwards in each direction while the
    bits fall (the cost is unimodal in the shift); the smallest shift among equals."""
    bits = {0: unshifted}
    for direction in (-1, 1):
        shift = direction
        while shift in INDEX_SHIFTS:
            bits[shift] = cost(mean, shifted(index, shift))
            if bits[shift] >= bits[shift - direction]:
                break
            shift += direction
    best = min(bits, key=lambda shift: (bits[shift], abs(shift), shift))
    return best, bits[best]


def _fit_mean(
    planes: Callable[..., Iterator[np.ndarray]], mean: np.ndarray, index: np.ndarray, residual: np.ndarray, inside: np.ndarray
) -> PassAdaptation | None:
    """The mean's correction by iteratively reweighted least squares, which minimises
    Σ |r − μ − correction|/b, the Laplace law's cost (b the pixel's table scale), over the
    ``inside`` pixels of (at most :data:`FIT_PIXELS` of) the pass; None when too few.

    Reproducible on every machine: features and targets are integers clipped to ±2^11 and the
    weights integers in [1, 2^9], so every product of the normal equations is below 2^31 and
    every partial sum of at most 2^15 of them below 2^46, which float64 adds exactly in any
    order (BLAS included); they are solved in Python floats (:mod:`medvae.least_squares`), and
    the weights come from integer arithmetic on the coefficients rounded as the file stores them."""
    stride = max(1, -(-mean.size // FIT_PIXELS))
    rows = slice(None, None, stride)
    chosen = inside[rows].ravel()
    X = np.stack(list(planes(stride))).reshape(-1, chosen.size)[:, chosen].T.clip(-_FIT_LIMIT, _FIT_LIMIT)
    if len(X) < 16 * X.shape[1]:
        return None
    y = np.clip((residual[rows] - mean[rows]).ravel()[chosen], -_FIT_LIMIT, _FIT_LIMIT)
    scale = _scales()[index[rows].ravel()[chosen]]  # b · 2^8, integers
    weights = _weights(scale * scale)  # the first solution: least squares weighted by 1/b²
    X_float, adaptation = torch.from_numpy(X.astype(np.float64)), None  # torch's BLAS: a third of numpy's time here
    for _ in range(FIT_ROUNDS):
        weighted = X_float * torch.from_numpy(weights.astype(np.float64)).unsqueeze(1)
        gram = (X_float.T @ weighted).numpy()
        moment = (X_float.T @ torch.from_numpy((y * weights).astype(np.float64))).numpy()
        solution = least_squares.solve(gram, moment)
        adaptation = _quantized(solution)
        if adaptation is None:
            return None
        shift = adaptation.shift  # twice the error, rounded: integers, exact
        correction = (X_float @ torch.from_numpy(adaptation.coefficients.astype(np.float64))).numpy().astype(np.int64)  # 34 terms below 2^26: exact
        twice_error = ((y << (shift + 1)) - (correction << 1) + ((1 << shift) >> 1)) >> shift
        weights = _weights(scale * np.maximum(np.abs(twice_error), 1))  # 1/(b · max(|e|, ½))
    return adaptation


def _weights(denominator: np.ndarray) -> np.ndarray:
    """Integer weights in [1, 2^9] proportional to 1/``denominator`` (positive int64): the tenth
    of the pixels with the smallest denominators get the most weight."""
    reference = int(np.partition(denominator, len(denominator) // 10)[len(denominator) // 10])
    return np.clip((reference << 9) // denominator, 1, 1 << 9)


@lru_cache(maxsize=1)
def _scales() -> np.ndarray:
    """Each table's scale b in 2^-8 of its symbol unit, floored, as int64: ``⌊2^(LOG2_MIN + (i + ½)/STEPS + 8)⌋``
    for table i, in integer arithmetic, the same everywhere: the 2·STEPS-th root (a power of two)
    taken as nested integer square roots, which give the floor of the true root."""
    root = 2 * STEPS
    assert root & (root - 1) == 0, "the tables' steps per octave make a power-of-two root"

    def floor_root(n: int) -> int:
        for _ in range(root.bit_length() - 1):
            n = math.isqrt(n)
        return n

    return np.array([floor_root(2 ** (2 * i + 1 + root * (LOG2_MIN + 8))) for i in range(COUNT)], np.int64)


def _quantized(solution: list[float]) -> PassAdaptation | None:
    """The solution as the file stores it: int16 coefficients at the finest shift that holds
    the largest (None if it is 0 or too large for a shift of 0)."""
    largest = max(abs(v) for v in solution)
    if not largest < COEFFICIENT_LIMIT or largest == 0.0:  # also refuses a NaN
        return None
    shift = 0
    while shift < SHIFT_LIMIT and math.ldexp(largest, shift + 1) <= COEFFICIENT_LIMIT:  # exact powers of two
        shift += 1
    return PassAdaptation(0, shift, np.array([round(math.ldexp(v, shift)) for v in solution], np.int64))
