"""JPEG-LS (CharLS through imagecodecs): lossless (NEAR = 0) and near-lossless.

Near-lossless mode guarantees ``max |error| <= NEAR`` on the coded samples.
JPEG-LS codes unsigned samples only, so signed images are offset by
``2**(bits-1)`` first (a 6-byte :class:`~medvae.evaluation.codecs.DepthHeader`
records it; the offset is exact, so the bound still holds on the stored values).
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import DepthHeader, Family, ImageCodec, check_depth, register_family

#: NEAR values of the default sweep (lossless, NEAR = 0, is added to them).
DEFAULT_NEAR = (1, 2, 4, 8, 16, 32, 64, 128)


class JPEGLS(ImageCodec):
    """JPEG-LS with ``value`` = NEAR (0 = lossless)."""

    family = "jpegls"
    knob = "near"

    def __init__(self, value: int | None = None, lossless: bool = False):
        near = 0 if lossless or value is None else int(value)
        if near < 0 or near > 255:
            raise InputError(f"JPEG-LS NEAR must be in 0..255, got {value}")
        super().__init__(near, lossless=near == 0)

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        import imagecodecs

        image, bits, signed = check_depth(image, bits_stored)
        if self.value > ((1 << bits) - 1) // 2:
            raise InputError(f"JPEG-LS NEAR={self.value} exceeds half the {bits}-bit range")
        head = DepthHeader.for_image(image, bits, signed)
        return head.pack() + imagecodecs.jpegls_encode(head.to_unsigned(image), level=self.value)

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        head, body = DepthHeader.unpack(data)
        return head.restore(imagecodecs.jpegls_decode(body))


def _make(value: str | None) -> list[ImageCodec]:
    if value is None:
        return [JPEGLS(0)] + [JPEGLS(n) for n in DEFAULT_NEAR]
    if value.lower() == "lossless":
        return [JPEGLS(0)]
    try:
        return [JPEGLS(int(value))]
    except ValueError:
        raise InputError(f"jpegls: bad NEAR value {value!r}") from None


register_family(Family("jpegls", _make, "JPEG-LS (CharLS): lossless and near-lossless NEAR"))
