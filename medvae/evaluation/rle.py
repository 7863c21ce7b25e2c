"""DICOM RLE Lossless (PS3.5 Annex G, pydicom's own encoder and decoder): a lossless anchor.

RLE Lossless is one of the two lossless schemes older archives hold (the other is lossless
JPEG, process 14, in :mod:`medvae.evaluation.jpeg`). It codes each byte plane of the
samples with PackBits, so it is fast and weak; we report it because archives contain it.
The frame is stored as pydicom writes it into Pixel Data (one fragment); a 6-byte
:class:`~medvae.evaluation.codecs.DepthHeader` records what the decoder needs.
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import DepthHeader, Family, ImageCodec, check_depth, register_family


class RLE(ImageCodec):
    """DICOM RLE Lossless (lossless only)."""

    family = "rle"
    knob = "lossless"

    def __init__(self, value: None = None, lossless: bool = True):
        super().__init__(None, lossless=True)

    @staticmethod
    def _options(shape: tuple[int, int], bits: int, signed: bool) -> dict:
        return dict(
            rows=shape[0], columns=shape[1], samples_per_pixel=1, bits_allocated=8 if bits <= 8 and not signed else 16,
            bits_stored=bits, pixel_representation=int(signed), photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
        )

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        from pydicom.pixels import get_encoder
        from pydicom.uid import RLELossless

        image, bits, signed = check_depth(image, bits_stored)
        head = DepthHeader.for_image(image, bits, signed)
        options = self._options(image.shape, bits, signed)
        samples = image.astype(np.uint8 if options["bits_allocated"] == 8 else image.dtype)  # the dtype decode returns
        shape = np.asarray(image.shape, ">u2").tobytes()
        return head.pack() + shape + get_encoder(RLELossless).encode(np.ascontiguousarray(samples), **options)

    def decode(self, data: bytes) -> np.ndarray:
        from pydicom.encaps import encapsulate
        from pydicom.pixels import get_decoder
        from pydicom.uid import RLELossless

        head, body = DepthHeader.unpack(data)
        rows, columns = np.frombuffer(body[:4], ">u2").tolist()
        options = self._options((rows, columns), head.bits, head.signed)
        pixels, _ = get_decoder(RLELossless).as_array(encapsulate([body[4:]]), **options)
        return pixels.reshape(rows, columns)


def _make(value: str | None) -> list[ImageCodec]:
    if value is not None and value.lower() != "lossless":
        raise InputError(f"rle is lossless only; got {value!r}")
    return [RLE()]


register_family(Family("rle", _make, "DICOM RLE Lossless (pydicom)"))
