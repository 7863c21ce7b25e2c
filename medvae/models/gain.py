"""Gain units: one latent scaling per rate level, so one model codes a continuous range of rates.

Cui et al. (CVPR 2021) scale the latent ``y`` channel by channel before quantization
(``gain``) and scale the decoded ``ŷ`` back (``inverse_gain``): a small gain quantizes
coarsely (few bits), a large one finely. One gain vector is learned per trained λ (a
*level*); a quality between two levels uses a mix of their vectors.

Qualities are multiples of :data:`QUALITY_STEP` (1/256) in ``[LOWEST_QUALITY, levels]``:
level ``i`` is quality ``i + 1``. Between levels the gain is the geometric mix
``g_i^((256 − k)/256) · g_{i+1}^(k/256)`` of the two vectors (``k`` the fraction in 1/256), as
Cui et al. interpolate: the gain and the inverse gain then stay each other's inverse between
levels wherever they are at the levels. (A linear mix of both, which format-5 files of the
release before used, scales ŷ by up to 10 % too much halfway between two levels, and costs
several dB there.) The exact twin (:class:`medvae.exact.layers.ExactGain`) computes the mix
in correctly rounded decimal arithmetic, so a file's quality names one gain vector on every
machine.

Below quality 1, the lowest trained level, the same formula runs on with ``k`` negative
(``k = −512·(1 − q)``): the gains continue the geometric line through levels 1 and 2 for
:data:`LEVELS_BELOW` levels (quality 0 is ``g_1³ / g_2²``). These qualities are extrapolated,
not trained; they exist so that a rate target below the first level (0.05 bpp on CT) can be
met. (Files store the quality as an unsigned count of 1/256, so the range cannot go below 0.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medvae.errors import InputError

#: Qualities are stored in files as integers in these units.
QUALITY_UNITS = 256
QUALITY_STEP = 1 / QUALITY_UNITS
#: The lowest quality, :data:`LEVELS_BELOW` levels below the first trained one (extrapolated; module docstring).
LOWEST_QUALITY = 0
#: Levels the range below quality 1 spans: quality 0 continues the gains this many levels down.
LEVELS_BELOW = 2


def quality_units(quality: float, levels: int) -> int:
    """``quality`` in units of :data:`QUALITY_STEP` (rounded), checked to lie in
    ``[LOWEST_QUALITY, levels]``."""
    q = float(quality)
    if not (math.isfinite(q) and LOWEST_QUALITY <= q <= levels):
        raise InputError(f"quality must be a number from {LOWEST_QUALITY} to {levels}, got {quality}")
    return round(q * QUALITY_UNITS)


def mix_position(units: int) -> tuple[int, int]:
    """``(i, k)``: quality ``units / 256`` lies ``k / 256`` of the way from level ``i`` to
    level ``i + 1``; below the first level, ``(0, k)`` with ``k`` negative (extrapolated)."""
    i, k = divmod(int(units) - QUALITY_UNITS, QUALITY_UNITS)
    return (0, (int(units) - QUALITY_UNITS) * LEVELS_BELOW) if i < 0 else (i, k)


def mix(table: Tensor, units: int, geometric: bool = True) -> Tensor:
    """The row of ``table`` (levels, channels) at quality ``units / 256``: a level's row, or
    the mix of the two levels around it, geometric (``t_i^(1 − k/256) · t_{i+1}^(k/256)``, for
    positive tables; extrapolated below the first level) or linear
    (``((256 − k)·t_i + k·t_{i+1}) / 256``, between levels only: format-5 files)."""
    i, k = mix_position(units)
    if k == 0:
        return table[i]
    if k < 0 and not geometric:
        raise InputError("qualities below 1 mix the gains geometrically; a linear mix has none")
    if geometric:
        return torch.exp(((QUALITY_UNITS - k) * table[i].log() + k * table[i + 1].log()) / QUALITY_UNITS)
    return ((QUALITY_UNITS - k) * table[i] + k * table[i + 1]) / QUALITY_UNITS


class GainUnit(nn.Module):
    """Per-channel scaling of a (B, C, H, W) latent by a learned vector per level.

    The vector used is :attr:`levels_in_batch` (one level per sample, set while training)
    when given, else the one at :attr:`units` (a quality in 1/256, set by the coder), mixed
    geometrically unless :attr:`geometric` is False (format-5 files).
    """

    def __init__(self, initial: Tensor):
        super().__init__()
        self.gain = nn.Parameter(initial.detach().clone().float())
        self.units = QUALITY_UNITS * self.levels
        self.levels_in_batch: Tensor | None = None
        self.geometric = True

    @property
    def levels(self) -> int:
        return self.gain.shape[0]

    def forward(self, y: Tensor) -> Tensor:
        if self.levels_in_batch is not None:
            return y * self.gain[self.levels_in_batch][:, :, None, None].to(y.dtype)
        return y * mix(self.gain, self.units, self.geometric)[None, :, None, None].to(y.dtype)
