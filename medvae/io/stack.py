"""The :class:`ImageStack` every reader returns, and the dtype rules behind it.

A stack is what the codec and the metrics need from an input: the stored
integers as ``(slices, rows, columns)`` in a dtype the codec stores (uint8,
uint16 or int16), the bit depth and signedness they were stored with, the
rescale to physical units (Hounsfield units for CT) and the display windows.
For DICOM it also keeps each slice's dataset, so a decoded image can be written
back with every attribute that stays true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvae.errors import InputError
from medvae.intensity import SUPPORTED_DTYPES


@dataclass
class ImageStack:
    """Stored pixels of one image, series or volume, with what the codec needs.

    Attributes:
        pixels (numpy.ndarray): Stored integers, shape ``(slices, rows, columns)``, dtype uint8,
            uint16 or int16. No rescale and no window is applied.
        bits_stored (int): Significant bits per pixel: *Bits Stored* for DICOM; for formats that
            do not declare it, the fewest bits (at least 8) that hold every value.
        signed (bool): Whether the stored integers are two's complement (*Pixel Representation*
            1).
        slope, intercept (float): *Rescale Slope* and *Rescale Intercept* of the first slice:
            physical value = ``slope * stored + intercept``. See :meth:`rescale_of` for other
            slices.
        photometric (str): *Photometric Interpretation*, ``MONOCHROME1`` or ``MONOCHROME2``.
        modality (str): DICOM *Modality* (``CT``, ``MR``, ``CR``...), or ``OT`` when unknown.
        windows (list of (float, float)): Display presets as ``(center, width)`` in rescaled
            units, as the file declares them (*Window Center* / *Window Width* of the first
            slice).
        datasets (list of pydicom.Dataset or None): For DICOM, the dataset each slice came from,
            without its pixel data (the same object repeats for the frames of a multi-frame
            file).
        paths (list of Path): The file each slice came from.
        source_format (str): ``dicom``, ``nifti``, ``nrrd``, ``png``, ``tiff`` or ``npy``.
        frames (list of int): Index of each slice within its file (0 for single-frame files).
        header (Any): Format-specific header kept for writing back (the ``nibabel`` image header
            for NIfTI, the ``pynrrd`` header dict for NRRD), else None.
        rescales (list of (float, float) or None): ``(slope, intercept)`` of each slice when
            they may differ (DICOM), else None.
    """

    pixels: np.ndarray
    bits_stored: int
    signed: bool
    slope: float = 1.0
    intercept: float = 0.0
    photometric: str = "MONOCHROME2"
    modality: str = "OT"
    windows: list[tuple[float, float]] = field(default_factory=list)
    datasets: list[Any] | None = None
    paths: list[Path] = field(default_factory=list)
    source_format: str = "npy"
    frames: list[int] = field(default_factory=list)
    header: Any = None
    rescales: list[tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 3:
            raise ValueError(f"pixels must be (slices, rows, columns), got {self.pixels.shape}")
        if self.pixels.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"pixels must be uint8, uint16 or int16, got {self.pixels.dtype}")
        if not self.frames:
            self.frames = [0] * len(self.pixels)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    def rescale_of(self, index: int) -> tuple[float, float]:
        """``(slope, intercept)`` of slice ``index`` (they may differ per slice in DICOM)."""
        if self.rescales is not None:
            return self.rescales[index]
        return self.slope, self.intercept

    def physical(self, index: int) -> np.ndarray:
        """Slice ``index`` in physical units (float64): ``slope * stored + intercept``."""
        slope, intercept = self.rescale_of(index)
        return self.pixels[index].astype(np.float64) * slope + intercept


def bits_needed(pixels: np.ndarray, signed: bool) -> int:
    """Fewest bits (at least 8) that hold every value of ``pixels``.

    Used as *Bits Stored* for formats that do not declare one, so PSNR peaks
    (2**bits - 1) reflect the data and not the container's width.
    """
    if pixels.size == 0:
        return 8
    lo, hi = int(pixels.min()), int(pixels.max())
    if signed:
        bits = max((-lo - 1).bit_length(), hi.bit_length()) + 1 if lo < 0 else hi.bit_length() + 1
    else:
        bits = hi.bit_length()
    return max(8, bits)


def to_codec_dtype(values: np.ndarray, path: Path | str) -> np.ndarray:
    """Return ``values`` as uint8, uint16 or int16 without changing any value.

    uint8, uint16 and int16 pass through; other integer arrays, and
    floating-point arrays holding only whole numbers, become int16 when their
    range fits, else uint16.

    Raises:
        medvae.errors.InputError: Complex, boolean or non-integral values, or a range no 16-bit
            type holds.
    """
    values = np.asarray(values)
    if values.dtype in SUPPORTED_DTYPES:
        return values
    kind = values.dtype.kind
    if kind not in "iuf":
        raise InputError(f"{path}: unsupported pixel type {values.dtype}")
    if values.size == 0:
        raise InputError(f"{path}: image is empty")
    if kind == "f":
        if not np.all(np.isfinite(values)):
            raise InputError(f"{path}: floating-point pixels include NaN or infinity")
        if not np.array_equal(values, np.round(values)):
            raise InputError(
                f"{path}: floating-point pixels are not whole numbers; MedVAE codes stored integers"
            )
    lo, hi = values.min(), values.max()
    for dtype in (np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    raise InputError(
        f"{path}: values {lo}..{hi} do not fit 16 bits; MedVAE codes uint8, uint16 and int16 images"
    )
