"""The one mapping between stored integers and the model's [0, 1] domain.

The codec, the training dataset and the metrics all use these functions, so a
model is trained on exactly the normalization it will see when coding.

The mapping is linear: ``lo`` maps to 0 and ``hi`` to 1. By default ``lo`` and
``hi`` are the image's own minimum and maximum (stored in the bitstream header),
so nothing outside a display window is ever thrown away.
"""

from __future__ import annotations

import numpy as np

from medvae.errors import InputError

#: Integer dtypes the codec stores natively.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16))


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a 2-D array of a supported integer dtype, or raise.

    Raises:
        medvae.errors.InputError: not 2-D, empty, or not uint8/uint16/int16.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    if image.size == 0:
        raise InputError("image is empty")
    if max(image.shape) > 65535:
        raise InputError(f"image of {image.shape[0]} x {image.shape[1]} pixels: MedVAE codes at most 65535 a side (as DICOM)")
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"unsupported dtype {image.dtype}; MedVAE codes uint8, uint16 and int16 images"
        )
    return image


def default_value_range(image: np.ndarray) -> tuple[int, int]:
    """The image's own (min, max), widened by one step for a constant image.

    The range always stays inside the dtype, so decoding can never wrap around.
    """
    lo, hi = int(image.min()), int(image.max())
    if hi > lo:
        return lo, hi
    if np.issubdtype(image.dtype, np.integer) and hi == np.iinfo(image.dtype).max:
        return lo - 1, hi
    return lo, hi + 1


def normalize(image: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Map stored integers to float32 in [0, 1]: ``(image - lo) / (hi - lo)``."""
    if hi <= lo:
        raise ValueError(f"empty value range [{lo}, {hi}]")
    return ((image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def denormalize(x: np.ndarray, lo: int, hi: int, dtype: np.dtype | type) -> np.ndarray:
    """Inverse of :func:`normalize`: clip to [0, 1], rescale, round, clip to [lo, hi], cast."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    restored = np.rint(x * (hi - lo) + lo)
    info = np.iinfo(dtype)
    return np.clip(restored, max(lo, info.min), min(hi, info.max)).astype(dtype)
