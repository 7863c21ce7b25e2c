"""JPEG 2000 (OpenJPEG): lossy at target rates (9/7 wavelet) and lossless (5/3).

Encoding goes through pylibjpeg-openjpeg's ``openjpeg.encode`` because it exposes
OpenJPEG's own rate allocation (``compression_ratios``, PCRD-optimized
truncation to a byte budget); ``imagecodecs.jpeg2k_encode`` only exposes a
target PSNR. Decoding uses ``imagecodecs.jpeg2k_decode``; both wrap the same
OpenJPEG library. The codestream is a raw J2K stream (no JP2 boxes), which
carries the precision and signedness, so nothing is added to it. One tile,
64×64 code blocks, 6 resolutions, one quality layer.
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import Family, ImageCodec, check_depth, numeric_sweep, register_family

#: Default lossy rate points (bpp) and the lossless point: covers the learned
#: models' range for 12-bit CT (about 0.05 to 3 bpp).
DEFAULT_BPP = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


class JPEG2000(ImageCodec):
    """JPEG 2000 at a target bpp (``value``), or lossless."""

    family = "jpeg2000"
    knob = "bpp"

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        import openjpeg

        image, bits, _ = check_depth(image, bits_stored)
        if min(image.shape) < 32:
            raise InputError("JPEG 2000 (6 resolutions) needs images of at least 32×32")
        ratios = []
        if not self.lossless:
            if self.value <= 0:
                raise InputError(f"target bpp must be > 0, got {self.value}")
            ratios = [max(1.0, bits / float(self.value))]
        return openjpeg.encode(
            np.ascontiguousarray(image), bits_stored=bits, photometric_interpretation=2,
            compression_ratios=ratios,
        )

    def decode(self, data: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpeg2k_decode(data)


register_family(
    Family(
        "jpeg2000",
        numeric_sweep(JPEG2000, DEFAULT_BPP, lossless=True),
        "JPEG 2000 (OpenJPEG): 9/7 at target bpp, 5/3 lossless",
    )
)
