"""Read DICOM files at their stored bit depth.

Pixel data is decoded by pydicom's own decoder plugins, so every transfer
syntax pydicom can decode with the installed plugins (pylibjpeg with its
OpenJPEG, libjpeg and RLE plugins, Pillow, GDCM...) works: native, deflated,
big endian, JPEG lossless, JPEG-LS, JPEG 2000 and RLE. The values returned are
the stored integers (masked to *Bits Stored* and sign-extended by pydicom), never
rescaled or windowed.

Files that are not grayscale images (colour, palette, SR, RT, segmentations,
1- or 32-bit pixels) give one :class:`~medvae.errors.InputError` naming the file
and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medvae.errors import InputError
from medvae.io.files import first_line
from medvae.io.stack import ImageStack, to_codec_dtype

#: Photometric interpretations MedVAE codes (one grayscale sample per pixel).
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")

#: Elements that hold pixel data of some kind; removed from kept datasets.
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)

#: Words in SOP Class names that mark objects with pixels that are no image to code.
NON_IMAGE_CLASSES = ("RT Dose", "Segmentation", "Parametric Map", "Real World Value")


def load_dataset(path: str | Path) -> Dataset:
    """Read one DICOM file (pixel data included but not yet decoded).

    Files without the 128-byte preamble and ``DICM`` prefix are read as well
    (``force=True``) when their first element is a plausible DICOM tag.

    Raises:
        medvae.errors.InputError: Not a DICOM file, or a file pydicom cannot parse.
    """
    path = Path(path)
    try:
        return pydicom.dcmread(path, force=not has_dicom_prefix(path))
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as exc:  # a damaged file can make the parser fail in many ways
        raise InputError(f"{path}: not a readable DICOM file ({first_line(exc)})") from exc


def has_dicom_prefix(path: str | Path) -> bool:
    """True if ``path`` has the DICOM preamble and ``DICM`` prefix (PS3.10 file)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def check_image_dataset(ds: Dataset, path: str | Path) -> None:
    """Raise :class:`InputError` unless ``ds`` is a grayscale image MedVAE can code."""
    sop_class = ds.get("SOPClassUID")
    class_name = getattr(sop_class, "name", None) or str(sop_class or "unknown SOP class")
    if not any(tag in ds for tag in PIXEL_TAGS):
        raise InputError(f"{path}: {class_name} has no pixel data (not an image, or a truncated file)")
    if any(word in class_name for word in NON_IMAGE_CLASSES):
        raise InputError(f"{path}: {class_name} is not an image MedVAE codes")
    if 0x7FE00010 not in ds:
        raise InputError(f"{path}: floating-point pixel data is not supported (stored integers only)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if not photometric:
        raise InputError(f"{path}: PhotometricInterpretation is missing; cannot tell grayscale from colour")
    if samples != 1 or photometric not in GRAYSCALE:
        raise InputError(
            f"{path}: colour image ({photometric or 'no PhotometricInterpretation'}, "
            f"{samples} samples per pixel); MedVAE codes grayscale (MONOCHROME1/2) only"
        )
    bits_allocated = ds.get("BitsAllocated")
    if bits_allocated not in (8, 16):
        raise InputError(
            f"{path}: BitsAllocated {bits_allocated} is not supported (8 or 16 bits only)"
        )
    for keyword in ("Rows", "Columns", "BitsStored", "PixelRepresentation"):
        if ds.get(keyword) in (None, ""):
            raise InputError(f"{path}: {keyword} is missing, pixel data cannot be interpreted")


def decode_pixels(ds: Dataset, path: str | Path) -> np.ndarray:
    """Decode the stored integers of ``ds`` as ``(frames, rows, columns)``.

    The dtype is uint8 for 8-bit unsigned data, uint16 or int16 (from *Pixel
    Representation*) otherwise; signed 8-bit data is widened to int16.

    Raises:
        medvae.errors.InputError: The transfer syntax has no available decoder, or the pixel
            data is truncated or corrupt.
    """
    check_image_dataset(ds, path)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types; all mean "cannot decode"
        name = getattr(tsyntax, "name", None) or "unknown transfer syntax"
        raise InputError(f"{path}: cannot decode pixel data ({name}): {first_line(exc)}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[0] != frames:
        raise InputError(f"{path}: decoded pixel array has unexpected shape {pixels.shape}")
    return to_codec_dtype(pixels, path)


def strip_pixel_data(ds: Dataset) -> Dataset:
    """Remove the pixel data elements (and with them pydicom's decoded cache) from ``ds`` in place."""
    for tag in PIXEL_TAGS + (0x7FE00001, 0x7FE00002):  # + extended offset table (lengths)
        if tag in ds:
            del ds[tag]
    return ds  # deleting the pixel data also drops pydicom's decoded cache (pydicom >= 3)


def rescale_of(ds: Dataset) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of ``ds``, from the top level or the
    shared functional groups of an enhanced multi-frame object; ``(1, 0)`` if absent."""
    source = ds
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        source = _functional_group(ds, "PixelValueTransformationSequence") or ds
    slope = _as_float(source.get("RescaleSlope"), 1.0) or 1.0
    intercept = _as_float(source.get("RescaleIntercept"), 0.0)
    return slope, intercept


def windows_of(ds: Dataset) -> list[tuple[float, float]]:
    """Display presets ``(WindowCenter, WindowWidth)`` of ``ds``; widths below 1 are dropped."""
    source = ds
    if "WindowCenter" not in ds:
        source = _functional_group(ds, "FrameVOILUTSequence") or ds
    centers = _as_floats(source.get("WindowCenter"))
    widths = _as_floats(source.get("WindowWidth"))
    return [(c, w) for c, w in zip(centers, widths) if w >= 1]


def read_dicom_files(paths: list[Path]) -> ImageStack:
    """Read DICOM files, already in slice order, into one :class:`ImageStack`.

    Every frame of every file becomes a slice. All slices must share rows,
    columns, *Pixel Representation* and *Photometric Interpretation*.
    """
    if not paths:
        raise InputError("no DICOM files to read")
    arrays: list[np.ndarray] = []
    file_datasets: list[Dataset] = []
    datasets: list[Dataset] = []
    slice_paths: list[Path] = []
    frames: list[int] = []
    for path in paths:
        ds = load_dataset(path)
        pixels = decode_pixels(ds, path)
        strip_pixel_data(ds)
        if arrays:
            _check_compatible(arrays[0], file_datasets[0], pixels, ds, path)
        arrays.append(pixels)
        file_datasets.append(ds)
        for frame in range(pixels.shape[0]):
            datasets.append(ds)
            slice_paths.append(Path(path))
            frames.append(frame)
    first = file_datasets[0]
    slope, intercept = rescale_of(first)
    return ImageStack(
        pixels=np.concatenate(arrays) if len(arrays) > 1 else arrays[0],
        bits_stored=max(int(ds.BitsStored) for ds in file_datasets),
        signed=int(first.PixelRepresentation) == 1,
        slope=slope,
        intercept=intercept,
        photometric=str(first.PhotometricInterpretation).strip(),
        modality=str(first.get("Modality", "") or "OT"),
        windows=windows_of(first),
        datasets=datasets,
        paths=slice_paths,
        source_format="dicom",
        frames=frames,
        rescales=[rescale_of(ds) for ds in datasets],
    )


def _check_compatible(ref_pixels: np.ndarray, ref: Dataset, pixels: np.ndarray, ds: Dataset, path: Path) -> None:
    """Raise if a slice cannot join the stack started by ``ref``."""
    if pixels.shape[1:] != ref_pixels.shape[1:]:
        raise InputError(
            f"{path}: slice size {pixels.shape[1]}x{pixels.shape[2]} differs from the series' "
            f"{ref_pixels.shape[1]}x{ref_pixels.shape[2]}"
        )
    if pixels.dtype != ref_pixels.dtype:
        raise InputError(
            f"{path}: pixel type {pixels.dtype} (PixelRepresentation {ds.PixelRepresentation}, "
            f"BitsAllocated {ds.BitsAllocated}) differs from the series' {ref_pixels.dtype}"
        )
    if str(ds.PhotometricInterpretation).strip() != str(ref.PhotometricInterpretation).strip():
        raise InputError(f"{path}: PhotometricInterpretation differs from the rest of the series")


def _functional_group(ds: Dataset, keyword: str) -> Dataset | None:
    """First item of ``keyword`` in the shared (else first per-frame) functional groups."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(group)
        if seq and keyword in seq[0] and seq[0][keyword].value:
            return seq[0][keyword].value[0]
    return None


def as_values(value: object) -> list:
    """An element value as a list: [] when empty, the items of a multi-value, else [value]."""
    if value in (None, ""):
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _as_floats(value: object) -> list[float]:
    floats = (_as_float(v, None) for v in as_values(value))
    return [f for f in floats if f is not None]


def _as_float(value: object, default: float | None) -> float | None:
    if value in (None, ""):
        return default
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
