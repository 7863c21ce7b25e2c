"""HTJ2K lossless (High-Throughput JPEG 2000, ISO 15444-15; OpenJPH through imagecodecs).

DICOM added HTJ2K transfer syntaxes in 2023 and new archives adopt them for speed; the
reversible 5/3 path is a lossless anchor. ``imagecodecs.htj2k_encode`` (OpenJPH 0.26 in
imagecodecs 2026.1.14) codes uint8/uint16/int16 samples natively, so nothing is added to
the codestream.
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import Family, ImageCodec, check_depth, register_family


class HTJ2K(ImageCodec):
    """HTJ2K reversible (lossless only)."""

    family = "htj2k"
    knob = "lossless"

    def __init__(self, value: None = None, lossless: bool = True):
        super().__init__(None, lossless=True)

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        import imagecodecs

        image, _, _ = check_depth(image, bits_stored)
        return imagecodecs.htj2k_encode(np.ascontiguousarray(image), reversible=True)

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.htj2k_decode(data)


def _make(value: str | None) -> list[ImageCodec]:
    if value is not None and value.lower() != "lossless":
        raise InputError(f"htj2k is lossless only here; got {value!r}")
    return [HTJ2K()]


register_family(Family("htj2k", _make, "HTJ2K reversible (OpenJPH)"))
