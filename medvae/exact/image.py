"""Between stored integers and the model's [0, 1] values, exactly and one tile at a time.

An image-sized float64 tensor costs 8 bytes a pixel (512 MiB for 8192×8192), so neither
the normalized input nor the decoded output is ever made whole: :class:`NormalizedImage`
normalizes the region a tile asks for, and :func:`pixels` turns each output tile into
integers as soon as it is computed. Both are elementwise IEEE operations, the same value
per pixel whatever the tiling, so tiles change no byte and no pixel.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from medvae.exact.fixed import Fixed, from_real, pow2
from medvae.exact.layers import TiledOutput
from medvae.exceptions import Exceptions


class NormalizedImage:
    """``(image − lo) / (hi − lo)``, padded to a multiple of ``stride`` by repeating the last
    row and column, as a (1, 1, H', W') input read region by region (:meth:`crop`).

    ``frac`` and ``device`` say which :class:`Fixed` values :meth:`crop` returns; the
    division is one correctly rounded operation per pixel, identical on every machine.
    With ``exceptions`` (:func:`medvae.exceptions.find`), each region is read as the
    model codes it, padding and extremes filled in, so that image is never made whole.
    """

    def __init__(
        self, image: np.ndarray, lo: int, hi: int, stride: int, frac: int = 0, device: str | torch.device = "cpu",
        exceptions: Exceptions | None = None,
    ):
        self.image, self.lo, self.hi, self.stride = image, int(lo), int(hi), int(stride)
        self.frac, self.device = int(frac), torch.device(device)
        self.exceptions = exceptions if exceptions else None
        h, w = image.shape
        self.shape = (1, 1, h + (-h) % stride, w + (-w) % stride)

    def as_fixed(self, frac: int, device: str | torch.device) -> "NormalizedImage":
        """The same image, read as :class:`Fixed` values with ``frac`` fractional bits on ``device``."""
        return NormalizedImage(self.image, self.lo, self.hi, self.stride, frac, device, self.exceptions)

    def real(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        """The normalized values of a region (float64, (1, 1, r1 − r0, c1 − c0))."""
        h, w = self.image.shape
        rows = np.minimum(np.arange(r0, r1), h - 1)
        cols = np.minimum(np.arange(c0, c1), w - 1)
        region = self.image[np.ix_(rows, cols)]
        if self.exceptions is not None:
            self.exceptions.fill(region, rows, cols)
        region = torch.from_numpy(region.astype(np.float64))
        return ((region - self.lo) / float(self.hi - self.lo))[None, None]

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> Fixed:
        return from_real(self.real(r0, r1, c0, c1).to(self.device), self.frac)

    def tensor(self) -> Tensor:
        """The whole normalized image (for the float model: refinement, rate estimates)."""
        return self.real(0, self.shape[2], 0, self.shape[3])


def pixel_rows(
    output: TiledOutput, shape: tuple[int, int], value_range: tuple[int, int], dtype: np.dtype
) -> Iterator[tuple[int, np.ndarray]]:
    """Stored integers from the model's output, ``round(clip(x̂, 0, 1) · (hi − lo) + lo)``
    clipped to the range and ``dtype``, as ``(first row, rows)`` bands in order: one band per
    row of tiles, yielded as soon as its tiles are computed, so a caller that only needs a
    checksum never holds the whole image."""
    h, w = shape
    lo, hi = value_range
    info = np.iinfo(dtype)
    start, band = 0, None
    for (r0, r1, c0, c1), part in output.tiles():
        if r0 >= h:
            continue
        if band is None or r0 != start:
            if band is not None:
                yield start, band
            start, band = r0, np.empty((min(r1, h) - r0, w), dtype)
        c1 = min(c1, w)
        if c0 >= c1:
            continue
        v = part.value[0, 0, : band.shape[0], : c1 - c0].clamp(0.0, pow2(part.frac))
        restored = torch.round(v * float(hi - lo) * pow2(-part.frac) + float(lo))
        band[:, c0:c1] = restored.clamp(max(lo, info.min), min(hi, info.max)).cpu().numpy().astype(dtype)
    if band is not None:
        yield start, band


def pixels(output: TiledOutput, shape: tuple[int, int], value_range: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The whole image :func:`pixel_rows` yields."""
    out = np.empty(shape, dtype)
    for start, band in pixel_rows(output, shape, value_range, dtype):
        out[start : start + band.shape[0]] = band
    return out
