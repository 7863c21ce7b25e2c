"""The seed paper's coiflet baseline: wavelet, global threshold, Huffman coding.

Encoder::

    x − 2**(bits−1)  ──►  coif2 DWT, 5 levels, periodization (PyWavelets; orthogonal)
          │  global hard threshold T = Δ, uniform quantization q = round(c / Δ)
          ▼
    coefficients in subband order (LL, then H/V/D coarse → fine)
          │  per nonzero value: zero-run class and magnitude category, each
          ▼  with its own canonical Huffman code (built per image), plus raw bits
    header (10 B) + 2 code tables (bitmap + 4 bits per used symbol, ~30 B) + bits

The wavelet is orthogonal, so one step Δ for every subband is near MSE-optimal.
A rate point is a target bpp; the encoder bisects on Δ for the largest stream
that fits (its time is part of the encode time). Everything is computed from
the native integers and the decoder rounds back to them: native bit depth.
"""

from __future__ import annotations

import struct

import numpy as np
import pywt

from medvae.errors import InputError
from medvae.evaluation import bits as _bits
from medvae.evaluation.codecs import Family, ImageCodec, check_depth, numeric_sweep, register_family, target_rate_search

WAVELET = "coif2"
MAX_LEVELS = 5
MODE = "periodization"
DEFAULT_BPP = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)

_RUN_CLASSES = 33  # zero-run length class = bit_length(run), 0..32
EOB = _RUN_CLASSES  # end of block: only zeros follow
_SIZES = 32  # magnitude category = bit_length(|q|), 1..31
_HEADER = struct.Struct("<HHBBf")  # H, W, bits|signed<<7, levels, step


def _levels(shape: tuple[int, int]) -> int:
    return max(1, min(MAX_LEVELS, pywt.dwt_max_level(min(shape), pywt.Wavelet(WAVELET).dec_len)))


def _mid(bits: int, signed: bool) -> float:
    return 0.0 if signed else float(1 << (bits - 1))


def quantize(coeffs: np.ndarray, step: float) -> np.ndarray:
    """Global hard threshold at ``step`` then uniform quantization: ``round(c / step)``, 0 below."""
    q = np.rint(coeffs / step).astype(np.int64)
    q[np.abs(coeffs) < step] = 0
    return q


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Exact ``int.bit_length`` of non-negative int64 values, vectorized."""
    out = np.zeros(x.shape, dtype=np.int64)
    x = x.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << shift)
        out[big] += shift
        x[big] >>= shift
    return out + (x > 0)


def encode_coefficients(q: np.ndarray) -> bytes:
    """Huffman-code a 1-D integer array: two code tables, then the bits.

    Each nonzero value is coded as (zero-run class, run remainder bits,
    magnitude category, value bits): the run before it as ``bit_length(run)``
    with ``class − 1`` raw bits, the value as JPEG codes AC values (its
    category, then ``category`` bits, ones' complement for negatives). A final
    EOB run symbol ends the array. Classes and categories each have a
    canonical Huffman code built for this array and sent in front.
    """
    nz = np.flatnonzero(q)
    vals = q[nz]
    runs = np.diff(np.concatenate(([-1], nz))) - 1
    run_class = _bit_length(runs)
    run_extra = runs - np.where(run_class > 0, 1 << np.maximum(run_class - 1, 0), 0)
    run_extra_len = np.maximum(run_class - 1, 0)
    size = _bit_length(np.abs(vals))
    if len(vals) and size.max() >= _SIZES:
        raise InputError("coefficient too large for the coiflet coder (step too small)")
    extra = np.where(vals >= 0, vals, vals + (1 << size) - 1)  # JPEG's ones'-complement style
    run_sym = np.append(run_class, EOB)
    run_len = _bits.code_lengths(np.bincount(run_sym, minlength=_RUN_CLASSES + 1))
    size_len = _bits.code_lengths(np.bincount(size, minlength=_SIZES))
    run_code, size_code = _bits.canonical_codes(run_len), _bits.canonical_codes(size_len)
    n = len(vals)
    values = np.zeros(4 * n + 1, dtype=np.uint64)
    widths = np.zeros(4 * n + 1, dtype=np.int64)
    values[0:-1:4], widths[0:-1:4] = run_code[run_class], run_len[run_class]
    values[1:-1:4], widths[1:-1:4] = run_extra.astype(np.uint64), run_extra_len
    values[2:-1:4], widths[2:-1:4] = size_code[size], size_len[size]
    values[3:-1:4], widths[3:-1:4] = extra.astype(np.uint64), size
    values[-1], widths[-1] = run_code[EOB], run_len[EOB]
    return _bits.pack_table(run_len) + _bits.pack_table(size_len) + _bits.pack_bits(values, widths)


def decode_coefficients(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode_coefficients` for an array of ``n`` coefficients."""
    run_len, used_a = _bits.unpack_table(data, _RUN_CLASSES + 1)
    size_len, used_b = _bits.unpack_table(data[used_a:], _SIZES)
    run_sym, run_bits, run_max = _bits.decode_table(run_len)
    size_sym, size_bits, size_max = _bits.decode_table(size_len)
    reader = _bits.BitReader(data[used_a + used_b :])
    peek, limit = reader.peek, reader.n_bits
    idx: list[int] = []
    out: list[int] = []
    pos = k = 0
    while True:
        if pos >= limit:
            raise InputError("truncated coiflet codestream")
        prefix = peek(pos, run_max)
        rc = run_sym[prefix]
        if rc < 0:
            raise InputError("corrupted coiflet codestream")
        pos += run_bits[prefix]
        if rc == EOB:
            break
        if rc:
            k += (1 << (rc - 1)) + peek(pos, rc - 1)
            pos += rc - 1
        prefix = peek(pos, size_max)
        size = size_sym[prefix]
        if size <= 0:
            raise InputError("corrupted coiflet codestream")
        pos += size_bits[prefix]
        v = peek(pos, size)
        pos += size
        if v < (1 << (size - 1)):
            v -= (1 << size) - 1
        idx.append(k)
        out.append(v)
        k += 1
    if k > n:
        raise InputError("corrupted coiflet codestream")
    q = np.zeros(n, dtype=np.int64)
    q[idx] = out
    return q


def _flatten(coeffs: list) -> np.ndarray:
    parts = [coeffs[0].ravel()] + [band.ravel() for level in coeffs[1:] for band in level]
    return np.concatenate(parts)


def _unflatten(flat: np.ndarray, shape: tuple[int, int], levels: int) -> list:
    shapes = pywt.wavedecn_shapes(shape, WAVELET, mode=MODE, level=levels)
    out, pos = [], 0
    n = int(np.prod(shapes[0]))
    out.append(flat[pos : pos + n].reshape(shapes[0]))
    pos += n
    for level in shapes[1:]:
        bands = []
        for key in ("ad", "da", "dd"):
            n = int(np.prod(level[key]))
            bands.append(flat[pos : pos + n].reshape(level[key]))
            pos += n
        out.append(tuple(bands))
    return out


class Coiflet(ImageCodec):
    """Coiflet wavelet + global threshold + Huffman, at a target bpp (``value``)."""

    family = "coiflet"
    knob = "bpp"

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        image, bits, signed = check_depth(image, bits_stored)
        h, w = image.shape
        if max(h, w) > 65535:
            raise InputError("image too large for the coiflet codec")
        levels = _levels(image.shape)
        flat = _flatten(pywt.wavedec2(image.astype(np.float64) - _mid(bits, signed), WAVELET, mode=MODE, level=levels))
        target = float(self.value) * h * w / 8.0

        def encode_at(step: float) -> bytes:
            step = float(np.float32(step))  # what the header can carry
            head = _HEADER.pack(h, w, bits | (0x80 if signed else 0), levels, step)
            return head + encode_coefficients(quantize(flat, step))

        peak = float(np.abs(flat).max(initial=1.0))
        return target_rate_search(encode_at, target, lo=max(peak / 2**30, 1e-3), hi=max(2 * peak, 1.0))

    def decode(self, data: bytes) -> np.ndarray:
        if len(data) < _HEADER.size:
            raise InputError("truncated coiflet codestream")
        h, w, flags, levels, step = _HEADER.unpack_from(data)
        bits, signed = flags & 0x7F, bool(flags & 0x80)
        total = _total_coefficients((h, w), levels)
        q = decode_coefficients(data[_HEADER.size :], total)
        coeffs = _unflatten(q.astype(np.float64) * step, (h, w), levels)
        x = pywt.waverec2(coeffs, WAVELET, mode=MODE)[:h, :w] + _mid(bits, signed)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        dtype = np.int16 if signed else (np.uint8 if bits <= 8 else np.uint16)
        return np.clip(np.rint(x), lo, hi).astype(dtype)


def _total_coefficients(shape: tuple[int, int], levels: int) -> int:
    shapes = pywt.wavedecn_shapes(shape, WAVELET, mode=MODE, level=levels)
    return int(np.prod(shapes[0])) + sum(int(np.prod(s)) for level in shapes[1:] for s in level.values())


register_family(
    Family("coiflet", numeric_sweep(Coiflet, DEFAULT_BPP, lossless=False), "coif2 DWT, global threshold, Huffman")
)
