"""Fixed-point tensors whose arithmetic is exact, so every machine computes the same integers.

A :class:`Fixed` holds integers ``v`` (stored in float64) with ``|v| <= LIMIT`` and a
number of fractional bits ``f``; the real value is ``v · 2^-f``.

Why the results cannot depend on the machine (the argument, in three sentences):
every value is an integer of at most 24 bits and every weight an integer whose
absolute values sum to at most 2^27 per output channel, so every partial sum of a
convolution, taken in any order, by any kernel, on any device, is an integer below
2^53 in magnitude and therefore exactly representable in float64, which makes the
sum independent of summation order, SIMD width, thread count, BLAS and GPU. Between
layers only exactly rounded IEEE 754 operations are used (add, multiply, divide, sqrt,
round-half-even, clamp, scaling by powers of two), each of which has one correct
result on every conforming CPU and GPU. The entropy coder's table indexes are then
exact comparisons of these values with the stored scale table, and its CDFs are
integers from the weights file, so encoder and decoder always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Activations are integers in [-LIMIT, LIMIT] (24 bits and a sign).
ACTIVATION_BITS = 24
LIMIT = float(2**ACTIVATION_BITS - 1)
#: Per output channel, the absolute values of integer weights sum to at most this.
WEIGHT_L1_BITS = 27
#: Integer biases are clamped to this magnitude: 2^24 · 2^27 + 2^51 < 2^53 bounds every sum.
BIAS_LIMIT = float(2**51)
DTYPE = torch.float64


@dataclass
class Fixed:
    """Integers ``value`` (float64, ``|value| <= LIMIT``) scaled by ``2^-frac``."""

    value: Tensor
    frac: int

    def real(self) -> Tensor:
        """The represented real numbers (exact in float64)."""
        return self.value * pow2(-self.frac)

    def to(self, frac: int) -> "Fixed":
        """The same numbers with ``frac`` fractional bits: rounded half to even, saturated."""
        return Fixed(requantize(self.value, self.frac, frac), frac)

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> "Fixed":
        """Rows ``r0:r1`` and columns ``c0:c1`` (a view)."""
        return Fixed(self.value[..., r0:r1, c0:c1], self.frac)

    def __abs__(self) -> "Fixed":
        return Fixed(self.value.abs(), self.frac)


@dataclass
class Stored:
    """A latent-sized :class:`Fixed` kept as int32, read region by region (:meth:`crop`).

    Activations are integers with ``|v| <= LIMIT < 2^24``, so int32 holds them exactly, in
    half the memory of float64; arithmetic stays in float64 on the regions read. Large
    latents (y of an 8192×8192 slice: 25 million values) are kept this way and nothing
    latent-sized is ever held in float64.
    """

    values: Tensor  # int32
    frac: int
    absolute: bool = False  # read as |values| (``abs(y)`` for h_a without a second copy of y)

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> Fixed:
        """Rows ``r0:r1`` and columns ``c0:c1`` as :class:`Fixed` (float64)."""
        region = self.values[..., r0:r1, c0:c1].to(DTYPE)
        return Fixed(region.abs_() if self.absolute else region, self.frac)

    def real(self) -> Tensor:
        """The represented real numbers, whole (float64: for small latents and tests)."""
        return self.crop(0, self.shape[-2], 0, self.shape[-1]).real()

    def __abs__(self) -> "Stored":
        """``|self|``, read lazily region by region: shares ``values`` (no copy of a latent)."""
        return Stored(self.values, self.frac, absolute=True)


def map_rows_(values: Tensor, fn, dtype: torch.dtype = DTYPE) -> Tensor:
    """Replace int32 ``values`` (…, H, W) by ``fn`` of them, computed in ``dtype`` (float64, or
    int64 for integer arithmetic) one band of rows at a time (so no wider copy of the whole
    exists); returns ``values``."""
    per_row = max(1, values[..., :1, :].numel())
    rows = max(1, 2**21 // per_row)
    for r0 in range(0, values.shape[-2], rows):
        band = values[..., r0 : r0 + rows, :]
        band.copy_(fn(band.to(dtype)))
    return values


def saturate(value: Tensor) -> Tensor:
    """Clamp integers to the activation range (exact)."""
    return value.clamp_(-LIMIT, LIMIT)


def pow2(shifts: Tensor | int) -> Tensor | float:
    """``2^shifts`` as exact float64 values, computed with ``math.ldexp`` (never a float ``pow``)."""
    if isinstance(shifts, int):
        return math.ldexp(1.0, shifts)
    return torch.tensor([math.ldexp(1.0, int(s)) for s in shifts.reshape(-1).tolist()], dtype=DTYPE).reshape(shifts.shape)


def scale_round(value: Tensor, multiplier: Tensor | float) -> Tensor:
    """``round(value · multiplier)`` (half to even), saturated; ``multiplier`` is a power of two
    (a float, or one per channel shaped to broadcast).

    Multiplying by a power of two is exact in float64, so the only rounding is the
    final one, which IEEE 754 defines to the bit.
    """
    return saturate(torch.round(value * multiplier))


def scale_round_(value: Tensor, multiplier: Tensor | float) -> Tensor:
    """:func:`scale_round` in place, for a temporary ``value`` (an accumulator)."""
    return saturate(value.mul_(multiplier).round_())


def requantize(value: Tensor, frac_in: int, frac_out: int) -> Tensor:
    """Integers at ``frac_in`` fractional bits re-expressed at ``frac_out`` (exact, then saturated)."""
    return scale_round(value, pow2(frac_out - frac_in))


def from_real(x: Tensor, frac: int) -> Fixed:
    """Round real numbers (any float tensor) to a :class:`Fixed` with ``frac`` fractional bits."""
    return Fixed(scale_round(x.to(DTYPE), pow2(frac)), frac)


def frac_for(max_abs: float, margin: float) -> int:
    """Fractional bits that leave ``margin`` × ``max_abs`` inside the activation range."""
    span = max(float(max_abs), 1e-6) * margin
    _, exponent = math.frexp(span)  # span < 2^exponent
    return ACTIVATION_BITS - exponent


def weight_shifts(weight: Tensor) -> Tensor:
    """Per output channel, the largest ``s_o`` that keeps ``fan_in · max|w_o| · 2^s_o < 2^WEIGHT_L1_BITS``.

    That bounds the sum of absolute integer weights of the channel. ``weight`` is laid out
    output channel first (``(O, ...)``). Every step is exact (abs, max, an integer product,
    frexp), so the same float weights give the same shifts on every machine.
    """
    flat = weight.detach().to("cpu", DTYPE).reshape(weight.shape[0], -1)
    peak = flat.abs().amax(dim=1) * flat.shape[1]  # exact: a float32 value times an integer < 2^16
    return torch.tensor([WEIGHT_L1_BITS - math.frexp(p)[1] if p > 0 else 0 for p in peak.tolist()], dtype=torch.int64)


def integer_weights(weight: Tensor, shifts: Tensor) -> Tensor:
    """``round(w · 2^s_o)`` per output channel (exact scaling, one rounding); ``shifts`` at most
    :func:`weight_shifts`, so the channel's absolute integer weights sum to at most 2^27 + fan-in."""
    w = weight.detach().to("cpu", DTYPE)
    flat = w.reshape(w.shape[0], -1)
    scaled = torch.round(flat * pow2(shifts)[:, None])
    assert bool((scaled.abs().sum(dim=1) <= 2.0**WEIGHT_L1_BITS + flat.shape[1]).all()), "weight bound violated"
    return scaled.reshape(w.shape)


def integer_bias(bias: Tensor, shifts: Tensor) -> Tensor:
    """Bias at the accumulator's scale ``2^shifts`` (one per channel), rounded, clamped to :data:`BIAS_LIMIT`."""
    b = bias.detach().to("cpu", DTYPE)
    return torch.round(b * pow2(shifts)).clamp(-BIAS_LIMIT, BIAS_LIMIT)
