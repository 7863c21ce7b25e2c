"""A correction of the lossy reconstruction that the encoder fits and the decoder applies exactly.

A trained decoder leaves errors that are the same all over an image: a bias that depends on
the intensity (on radiographs, bright bone comes back 3–4 grey levels too dark at the top
qualities) and a slight blur or ringing that a small linear filter undoes. The encoder knows
both the image and what every decoder will reconstruct, so it fits, by least squares, a
correction of the decoded pixels r:

    r'(p) = clip(r(p) + tone(r(p)) + Σ_δ w_δ · (r(p + δ) − r(p)), lo, hi)

where ``tone`` interpolates linearly between :data:`TONE_KNOTS` offsets spread evenly over the
image's intensity range [lo, hi], and δ runs over the :data:`TAPS` offsets of a diamond of
radius 3 (edges replicated). The coefficients travel in the file (:data:`BLOCK_BYTES` bytes, a
fixed length, so a file's size is known before its pixels are), and the decoder applies them
to its reconstruction before the exact pixels of :mod:`medvae.exceptions` are put back. This
is the Wiener-style in-loop filter of classical video codecs (the adaptive loop filter of
H.266/VVC), applied to a learned decoder's output.

Why every decoder gets the same pixels: the correction is computed from the integer pixels
only, in int64 arithmetic with fixed-point coefficients (tone offsets in 2^-16 of a pixel per
unit of the interpolation weights, which sum to the range; taps in 2^-:data:`TAP_SHIFT`), and
one rounding, a floor of an integer sum; int64 sums of integers do not depend on order,
instruction set or threads, and every term is below 2^47 (:func:`apply`). Floats appear only
in the encoder's fit, and that too is reproducible: the normal equations are sums of integer
products below 2^53, which float64 adds exactly in any order (the fit reads fewer than 2^20
pixels, and every feature is at most 2^16), and the small system is solved in Python floats, one
IEEE operation after another, so the same image gives the same coefficients, and the same
bytes, on every machine.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

import numpy as np

from medvae import least_squares
from medvae.errors import BitstreamError

#: Offsets of the intensity-dependent bias, at lo, lo + (hi − lo)/16, ..., hi.
TONE_KNOTS = 17
#: The filter's neighbours: every (dy, dx) with 0 < |dy| + |dx| <= 3.
TAPS = tuple((dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if 0 < abs(dy) + abs(dx) <= 3)
RADIUS = 3
#: Filter taps are stored in units of 2^-TAP_SHIFT.
TAP_SHIFT = 10
#: Tone offsets are in units of 2^-16 pixel per unit of interpolation weight (weights sum to hi − lo).
_UNIT_SHIFT = 16
_COEFFICIENTS = struct.Struct(f"<{TONE_KNOTS + len(TAPS)}h")
#: Length of the correction block of a format-11 file.
BLOCK_BYTES = _COEFFICIENTS.size
#: Images with fewer pixels carry no correction: at 256² the block cost up to 3 % more bits than it
#: saved in two of four cases, from 363² every case gained (``benchmarks/correction_sizes.py``).
MIN_PIXELS = 2**17
_INT16 = (-32768, 32767)
#: The fit reads about this many pixels (a regular subsample of larger images).
FIT_PIXELS = 2**18
_FIT_BAND_PIXELS = 2**16  # the fit's normal equations are summed over bands of about this many pixels
#: :func:`apply` works on bands of this many rows.
BAND_ROWS = 256


def applies(shape: tuple[int, int]) -> bool:
    """Whether an image of this shape carries a correction (decided from its shape alone, so that
    a file's length is known before its pixels are)."""
    return shape[0] * shape[1] >= MIN_PIXELS


def pack(tone: np.ndarray, taps: np.ndarray) -> bytes:
    """The block a file stores: the integer tone offsets and filter taps, as little-endian int16."""
    return _COEFFICIENTS.pack(*(int(v) for v in np.concatenate([tone, taps])))


def unpack(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(tone offsets, filter taps) from a stored block; :class:`BitstreamError` if it has the wrong length."""
    if len(block) != BLOCK_BYTES:
        raise BitstreamError(f"corrupted bitstream: a correction block of {len(block)} bytes, not {BLOCK_BYTES}")
    values = np.array(_COEFFICIENTS.unpack(block), np.int64)
    return values[:TONE_KNOTS], values[TONE_KNOTS:]


def _tone_weights(r: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel, its segment k and the integer weights (hi − lo − f, f) of knots k and k + 1."""
    span = hi - lo
    position = (np.clip(r, lo, hi) - lo) * (TONE_KNOTS - 1)
    segment = np.minimum(position // span, TONE_KNOTS - 2)
    upper = position - segment * span
    return segment, span - upper, upper


def _differences(padded: np.ndarray, rows: range, columns: range) -> Iterator[np.ndarray]:
    """r(p + δ) − r(p) (int64) for each tap in turn, at the pixels of ``rows`` × ``columns`` (ranges,
    strided for the fit's subsample); ``padded``: the image with :data:`RADIUS` edge-replicated pixels
    on each side."""

    def shifted(dy: int, dx: int) -> np.ndarray:
        y, x = rows.start + RADIUS + dy, columns.start + RADIUS + dx
        return padded[y : y + len(rows) * rows.step : rows.step, x : x + len(columns) * columns.step : columns.step]

    centre = shifted(0, 0).astype(np.int64)
    for dy, dx in TAPS:
        yield shifted(dy, dx).astype(np.int64) - centre


def apply(decoded: np.ndarray, value_range: tuple[int, int], block: bytes) -> np.ndarray:
    """The corrected pixels (same shape and dtype) of a reconstruction, by a stored block, computed
    in bands of :data:`BAND_ROWS` rows (a few band-sized int64 arrays at a time, whatever the image).

    Every term is an integer below 2^47 in magnitude (offsets and taps are int16, interpolation
    weights at most 2^16, differences at most 2^17, 24 taps), so the int64 sums are exact."""
    tone, taps = unpack(block)
    lo, hi = value_range
    info = np.iinfo(decoded.dtype)
    padded = np.pad(decoded, RADIUS, mode="edge")  # in the image's own dtype
    columns = range(decoded.shape[1])
    out = np.empty_like(decoded)
    for r0 in range(0, decoded.shape[0], BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, decoded.shape[0])
        r = decoded[r0:r1].astype(np.int64)
        segment, lower, upper = _tone_weights(r, lo, hi)
        total = tone[segment] * lower + tone[segment + 1] * upper  # in 2^-16 pixel
        for tap, difference in zip(taps, _differences(padded, range(r0, r1), columns)):
            if tap:
                total += (int(tap) << (_UNIT_SHIFT - TAP_SHIFT)) * difference
        corrected = r + ((total + (1 << (_UNIT_SHIFT - 1))) >> _UNIT_SHIFT)
        out[r0:r1] = np.clip(corrected, max(lo, info.min), min(hi, info.max))
    return out


def fit(image: np.ndarray, decoded: np.ndarray, value_range: tuple[int, int], exact: np.ndarray | None = None) -> bytes:
    """The block whose correction brings ``decoded`` closest to ``image`` in squared error (least
    squares on the pixels the model codes: not those in ``exact``, which the file restores), or
    the block of no correction where that is no better."""
    lo, hi = value_range
    keep = np.ones(decoded.shape, bool) if exact is None else ~exact
    step = max(1, math.isqrt(decoded.size // FIT_PIXELS))  # a regular subsample of fewer than 4 · FIT_PIXELS pixels
    # Every feature and target is an integer of at most 2^16 in magnitude (16-bit pixels), so every
    # partial sum of the normal equations is an integer below 4 · 2^18 · 2^32 = 2^52: exact in
    # float64, in any order, so they are summed band by band (a few megabytes at a time).
    padded = np.pad(decoded, RADIUS, mode="edge")
    columns = range(0, decoded.shape[1], step)
    size = TONE_KNOTS + len(TAPS)
    gram, moment = np.zeros((size, size)), np.zeros(size)
    band_step = step * max(1, _FIT_BAND_PIXELS // len(columns))  # image rows a band of the subsample spans
    for y0 in range(0, decoded.shape[0], band_step):
        rows = range(y0, min(y0 + band_step, decoded.shape[0]), step)
        grid = np.s_[rows.start : rows.stop : step, :: step]
        r, coded = decoded[grid].astype(np.int64), keep[grid]
        segment, lower, upper = _tone_weights(r[coded], lo, hi)
        features = np.zeros((len(segment), size))
        features[np.arange(len(segment)), segment] = lower
        features[np.arange(len(segment)), segment + 1] = upper
        for j, difference in enumerate(_differences(padded, rows, columns)):
            features[:, TONE_KNOTS + j] = difference[coded]
        y = (image[grid].astype(np.int64) - r)[coded].astype(np.float64)
        gram += features.T @ features
        moment += features.T @ y
    scale = np.array([2.0**-_UNIT_SHIFT] * TONE_KNOTS + [2.0**-TAP_SHIFT] * len(TAPS))  # one stored unit, in features' units
    solution = least_squares.solve(gram, moment)
    coefficients = np.array([round(min(max(v / s, _INT16[0]), _INT16[1])) for v, s in zip(solution, scale)], np.int64)
    block = pack(coefficients[:TONE_KNOTS], coefficients[TONE_KNOTS:])
    none = pack(np.zeros(TONE_KNOTS, np.int64), np.zeros(len(TAPS), np.int64))  # leaves every pixel as it is
    better = _squared_error(image, apply(decoded, value_range, block), keep) < _squared_error(image, decoded, keep)
    return block if better else none


def _squared_error(image: np.ndarray, decoded: np.ndarray, keep: np.ndarray) -> int:
    difference = image.astype(np.int64) - decoded.astype(np.int64)
    return int(np.square(difference[keep]).sum())
