"""JPEG-XL (libjxl through imagecodecs): lossy by Butteraugli distance, and lossless.

The sample precision is declared as the image's bits stored
(``bitspersample``), so a 12-bit image is coded as 12-bit, not as 16-bit
with 4 empty bits. libjxl codes unsigned samples only: signed images are
offset by ``2**(bits-1)`` (6-byte :class:`~medvae.evaluation.codecs.DepthHeader`).
Effort 7 (libjxl's default).
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import DepthHeader, Family, ImageCodec, check_depth, numeric_sweep, register_family

#: Butteraugli distances of the default sweep (libjxl allows 0.01 .. 25).
DEFAULT_DISTANCE = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 25.0)
EFFORT = 7


class JPEGXL(ImageCodec):
    """JPEG-XL at Butteraugli distance ``value``, or lossless."""

    family = "jpegxl"
    knob = "distance"

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        import imagecodecs

        image, bits, signed = check_depth(image, bits_stored)
        head = DepthHeader.for_image(image, bits, signed)
        samples = head.to_unsigned(image)
        if self.lossless:
            body = imagecodecs.jpegxl_encode(samples, lossless=True, bitspersample=bits, effort=EFFORT)
        else:
            if not 0 < float(self.value) <= 25:
                raise InputError(f"JPEG-XL distance must be in (0, 25], got {self.value}")
            body = imagecodecs.jpegxl_encode(
                samples, distance=float(self.value), bitspersample=bits, effort=EFFORT
            )
        return head.pack() + body

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        head, body = DepthHeader.unpack(data)
        return head.restore(imagecodecs.jpegxl_decode(body))


register_family(
    Family("jpegxl", numeric_sweep(JPEGXL, DEFAULT_DISTANCE, lossless=True), "JPEG-XL (libjxl): distance, lossless")
)
