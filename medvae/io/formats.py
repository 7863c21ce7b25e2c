"""Read the non-DICOM formats: NIfTI, NRRD, PNG, TIFF and ``.npy``.

Volumes come back as ``(slices, rows, columns)``: for NIfTI and NRRD, slice
``k`` of the third voxel axis, row ``j`` of the second, column ``i`` of the
first (a plain transpose, so writing back is exact). Values are the stored
integers: NIfTI ``scl_slope``/``scl_inter`` are reported as the rescale, never
applied. None of these formats declares *Bits Stored*, so it is the fewest bits
that hold the values (PNG's ``sBIT`` chunk wins where present).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from medvae.errors import InputError
from medvae.io.files import first_line
from medvae.io.stack import ImageStack, bits_needed, to_codec_dtype


def read_nifti(path: str | Path, modality: str = "OT") -> ImageStack:
    """Read a ``.nii``/``.nii.gz`` image (2-D or 3-D; a 4-D one must have one volume)."""
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(path)
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"{path}: not a readable NIfTI file ({first_line(exc)})") from exc
    # nibabel moves scl_slope/scl_inter from the image's header to its data proxy.
    slope, intercept = _finite(image.dataobj.slope, 1.0) or 1.0, _finite(image.dataobj.inter, 0.0)
    header = image.header.copy()
    header.set_slope_inter(slope, intercept)
    pixels = _volume_to_slices(raw, path)
    windows = []
    cal_min, cal_max = float(header["cal_min"]), float(header["cal_max"])
    if cal_max - cal_min >= 1:
        windows.append(((cal_min + cal_max) / 2, cal_max - cal_min))
    return _stack(pixels, path, "nifti", modality, slope=slope, intercept=intercept, windows=windows, header=header)


def read_nrrd(path: str | Path, modality: str = "OT") -> ImageStack:
    """Read a ``.nrrd``/``.nhdr`` image (scalar 2-D or 3-D)."""
    import nrrd

    path = Path(path)
    try:
        raw, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError...
        raise InputError(f"{path}: not a readable NRRD file ({first_line(exc)})") from exc
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    if any(k not in ("domain", "space", "time", "none", "???") for k in kinds):
        raise InputError(f"{path}: non-scalar NRRD (kinds {kinds}); MedVAE codes grayscale only")
    return _stack(_volume_to_slices(raw, path), path, "nrrd", modality, header=header)


def read_png(path: str | Path, modality: str = "OT") -> ImageStack:
    """Read an 8- or 16-bit grayscale PNG (colour, palette and alpha are refused)."""
    import imagecodecs

    path = Path(path)
    data = path.read_bytes()
    try:
        raw = imagecodecs.png_decode(data)
    except Exception as exc:
        raise InputError(f"{path}: not a readable PNG file ({first_line(exc)})") from exc
    if raw.ndim != 2:
        raise InputError(
            f"{path}: colour or alpha PNG ({raw.shape[-1]} channels); MedVAE codes grayscale only"
        )
    pixels = to_codec_dtype(raw, path)[np.newaxis]
    bits = _png_significant_bits(data)
    return _stack(pixels, path, "png", modality, bits_stored=bits)


def read_tiff(path: str | Path, modality: str = "OT") -> ImageStack:
    """Read a grayscale TIFF; every page of a multi-page file becomes a slice."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            pages = []
            for page in ImageSequence.Iterator(image):
                if page.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16S", "F"):
                    raise InputError(
                        f"{path}: colour TIFF (mode {page.mode}); MedVAE codes grayscale only"
                    )
                pages.append(np.array(page))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable TIFF file ({first_line(exc)})") from exc
    if len({p.shape for p in pages}) != 1:
        raise InputError(f"{path}: TIFF pages differ in size; cannot stack them")
    return _stack(to_codec_dtype(np.stack(pages), path), path, "tiff", modality)


def read_npy(path: str | Path, modality: str = "OT") -> ImageStack:
    """Read a 2-D ``(rows, columns)`` or 3-D ``(slices, rows, columns)`` ``.npy`` array."""
    path = Path(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({first_line(exc)})") from exc
    if raw.ndim == 2:
        raw = raw[np.newaxis]
    if raw.ndim != 3:
        raise InputError(f"{path}: expected a 2-D or 3-D array, got shape {raw.shape}")
    return _stack(to_codec_dtype(raw, path), path, "npy", modality)


def _volume_to_slices(raw: np.ndarray, path: Path) -> np.ndarray:
    """``(i, j[, k[, 1]])`` voxel array -> ``(k, j, i)`` slices in a codec dtype."""
    while raw.ndim > 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim == 2:
        raw = raw[..., np.newaxis]
    if raw.ndim != 3:
        raise InputError(f"{path}: expected a 2-D or 3-D image, got shape {raw.shape}")
    return np.ascontiguousarray(to_codec_dtype(raw, path).transpose(2, 1, 0))


def _stack(
    pixels: np.ndarray,
    path: Path,
    source_format: str,
    modality: str,
    *,
    bits_stored: int | None = None,
    **fields: object,
) -> ImageStack:
    """An :class:`ImageStack` for a single-file, non-DICOM source."""
    if pixels.size == 0:
        raise InputError(f"{path}: image is empty")
    signed = pixels.dtype.kind == "i"
    return ImageStack(
        pixels=pixels,
        bits_stored=bits_stored or bits_needed(pixels, signed),
        signed=signed,
        modality=modality or "OT",
        paths=[path] * len(pixels),
        frames=list(range(len(pixels))),
        source_format=source_format,
        **fields,  # type: ignore[arg-type]
    )


def _finite(value: object, default: float) -> float:
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) else default


def _png_significant_bits(data: bytes) -> int | None:
    """Significant bits from a grayscale PNG's ``sBIT`` chunk, if it has one."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"sBIT" and length >= 1:
            return int(data[pos + 8])
        if kind == b"IDAT":
            return None
        pos += 12 + length
    return None
