"""JPEG (ISO 10918-1, libjpeg-turbo through imagecodecs): 8/12-bit DCT, and lossless.

The DCT process codes 8- or 12-bit samples. What we do per bit depth:

- up to 8 bits: 8-bit JPEG; 9 to 12 bits: 12-bit JPEG (extended process). Native.
- 13 to 16 bits (e.g. signed 16-bit CT): the image minimum is subtracted; if
  the remaining range fits 12 bits (typical CT: −1024..3071 HU) it is coded
  exactly that way, nothing lost. Otherwise the samples are also shifted right
  into 12 bits, which loses the low bits even at quality 100; every such image
  carries the note returned by :meth:`JPEG.notes` in the results.

The lossless point uses the lossless process (process 14, predictor 1, up
to 16 bits): the same path pydicom's "JPEG Lossless SV1" transfer syntax uses.
Offset and shift travel in a 6-byte :class:`~medvae.evaluation.codecs.DepthHeader`.
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import DepthHeader, Family, ImageCodec, check_depth, numeric_sweep, register_family

#: Quality settings of the default sweep (libjpeg scale, 1..100).
DEFAULT_QUALITY = (5, 10, 20, 30, 50, 70, 85, 95, 100)
MAX_DCT_BITS = 12


class JPEG(ImageCodec):
    """JPEG at ``value`` = quality (1..100), or lossless (process 14)."""

    family = "jpeg"
    knob = "quality"

    def __init__(self, value: int | None = None, lossless: bool = False):
        if not lossless:
            value = int(value)
            if not 1 <= value <= 100:
                raise InputError(f"JPEG quality must be in 1..100, got {value}")
        super().__init__(value, lossless)

    def _header(self, image: np.ndarray, bits: int, signed: bool) -> DepthHeader:
        head = DepthHeader.for_image(image, bits, signed)
        if self.lossless or bits <= MAX_DCT_BITS:
            return head
        lo, hi = int(image.min()), int(image.max())
        shift = max(0, (hi - lo).bit_length() - MAX_DCT_BITS)
        return DepthHeader(bits=bits, signed=signed, shift=shift, offset=lo)

    def notes(self, image: np.ndarray, bits_stored: int | None = None) -> str:
        image, bits, signed = check_depth(image, bits_stored)
        head = self._header(image, bits, signed)
        if head.shift:
            return (
                f"{bits}-bit range {int(image.min())}..{int(image.max())} exceeds 12 bits: "
                f"shifted right by {head.shift} for 12-bit JPEG"
            )
        return ""

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        import imagecodecs

        image, bits, signed = check_depth(image, bits_stored)
        head = self._header(image, bits, signed)
        samples = head.to_unsigned(image)
        if self.lossless:
            body = imagecodecs.jpeg8_encode(samples, lossless=True, predictor=1, bitspersample=max(bits, 2))
        else:
            # libjpeg-turbo takes uint8 for 8-bit and uint16 for 12-bit precision
            precision = 8 if bits <= 8 else MAX_DCT_BITS
            samples = np.minimum(samples, (1 << precision) - 1).astype(np.uint8 if precision == 8 else np.uint16)
            body = imagecodecs.jpeg8_encode(samples, level=self.value, bitspersample=precision, optimize=True)
        return head.pack() + body

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        head, body = DepthHeader.unpack(data)
        return head.restore(imagecodecs.jpeg8_decode(body))


register_family(Family("jpeg", numeric_sweep(JPEG, DEFAULT_QUALITY, lossless=True, cast=int), "JPEG 8/12-bit DCT and lossless"))
