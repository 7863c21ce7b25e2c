"""Write decoded images in the non-DICOM formats, and any stack "like its source".

Every writer is atomic (temporary file in the destination folder, then rename)
and keeps the dtype, so reading the output back gives the same integers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvae.errors import InputError
from medvae.io.dicom_writer import decoded_dicom_bytes
from medvae.io.files import atomic_path, gzip_bytes
from medvae.io.stack import ImageStack


def write_png16(image: np.ndarray, path: str | Path) -> Path:
    """Write a 2-D uint16 (16-bit PNG) or uint8 (8-bit PNG) grayscale image.

    Raises:
        medvae.errors.InputError: Signed or other dtypes (PNG holds no negative values; use
            :func:`write_tiff` or :func:`write_npy`), or not 2-D.
    """
    return _write_bytes(path, png16_bytes(image, str(path)))


def png16_bytes(image: np.ndarray, name: str = "PNG") -> bytes:
    """The 16-bit (uint16) or 8-bit (uint8) grayscale PNG of a 2-D image (see :func:`write_png16`)."""
    import imagecodecs

    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: PNG needs a 2-D uint8 or uint16 image, got {image.shape} {image.dtype}")
    return imagecodecs.png_encode(np.ascontiguousarray(image))


def write_tiff(image: np.ndarray, path: str | Path) -> Path:
    """Write a 2-D image, or a ``(slices, rows, columns)`` stack as pages, to TIFF (any codec dtype)."""
    return _write_bytes(path, tiff_bytes(image, str(path)))


def tiff_bytes(image: np.ndarray, name: str = "TIFF") -> bytes:
    """The TIFF of a 2-D image or a ``(slices, rows, columns)`` stack (see :func:`write_tiff`)."""
    import imagecodecs

    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(f"{name}: TIFF needs a 2-D image or a 3-D stack, got {image.shape}")
    return imagecodecs.tiff_encode(np.ascontiguousarray(image))


def write_npy(image: np.ndarray, path: str | Path) -> Path:
    """Write an array to ``.npy`` exactly (no pickling)."""
    return _write_bytes(path, npy_bytes(image))


def npy_bytes(image: np.ndarray) -> bytes:
    """The ``.npy`` file of an array (no pickling)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(image), allow_pickle=False)
    return buffer.getvalue()


def write_nifti(volume: np.ndarray, path: str | Path, header: Any = None) -> Path:
    """Write ``(slices, rows, columns)`` (or one 2-D slice) to NIfTI; gzip for ``.gz`` names.

    ``header`` is the source's nibabel header (``ImageStack.header``): its
    affine, units and intent are kept, its scaling too, so the stored integers
    keep their meaning. The layout is the inverse of :func:`medvae.io.read`'s.
    """
    return _write_bytes(path, nifti_bytes(volume, header, gz=str(path).lower().endswith(".gz")))


def nifti_bytes(volume: np.ndarray, header: Any = None, *, gz: bool = True) -> bytes:
    """The NIfTI file (gzipped when ``gz``) of a volume or slice (see :func:`write_nifti`)."""
    import nibabel as nib

    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    data = np.ascontiguousarray(volume.transpose(2, 1, 0))
    if header is not None:
        header = header.copy()
        header.set_data_dtype(data.dtype)
        image = nib.Nifti1Image(data, header.get_best_affine(), header=header)
        slope, inter = header.get_slope_inter()
        image.header.set_slope_inter(slope, inter)
    else:
        image = nib.Nifti1Image(data, np.eye(4))
        image.header.set_data_dtype(data.dtype)
    raw = image.to_bytes()
    return gzip_bytes(raw) if gz else raw


def write_nrrd(volume: np.ndarray, path: str | Path, header: dict | None = None) -> Path:
    """Write ``(slices, rows, columns)`` (or one 2-D slice) to an attached-header NRRD.

    ``header`` is the source's pynrrd header (``ImageStack.header``): its space,
    directions and origin are kept.
    """
    return _write_bytes(path, nrrd_bytes(volume, header))


def nrrd_bytes(volume: np.ndarray, header: dict | None = None) -> bytes:
    """The attached-header, gzip-encoded NRRD of a volume or slice (see :func:`write_nrrd`)."""
    import nrrd

    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    keep = ("space", "space directions", "space origin", "kinds", "space units", "endian")
    out = {k: v for k, v in (header or {}).items() if k in keep}
    out["encoding"] = "gzip"
    buffer = io.BytesIO()
    nrrd.write(buffer, np.ascontiguousarray(volume.transpose(2, 1, 0)), out)
    return buffer.getvalue()


def source_bytes(
    pixels: np.ndarray,
    source_format: str,
    *,
    header: Any = None,
    dataset: Any = None,
    compression_ratio: float | None = None,
    name: str = "decoded",
    gz: bool = True,
    **dicom_options: Any,
) -> bytes:
    """The file decoded ``pixels`` make in their source's format, as bytes: the one encoder
    behind :func:`write_like` and the command line's restored files.

    ``header``: the NIfTI or NRRD source header; ``dataset`` and ``compression_ratio``:
    the source DICOM dataset and the ratio it declares (``dicom_options``: ``method``,
    ``description``, ``series_instance_uid``); ``name`` appears in error messages;
    ``gz``: gzip NIfTI (as ``.nii.gz``).
    """
    if source_format == "dicom":
        if dataset is None:
            raise InputError(f"{name}: writing DICOM needs the source's DICOM header")
        if compression_ratio is None:
            raise InputError(f"{name}: writing DICOM needs the compression ratio")
        return decoded_dicom_bytes(pixels, dataset, compression_ratio=compression_ratio, name=name, **dicom_options)
    encoders = {
        "nifti": lambda: nifti_bytes(pixels, header, gz=gz),
        "nrrd": lambda: nrrd_bytes(pixels, header),
        "npy": lambda: npy_bytes(pixels),
        "tiff": lambda: tiff_bytes(pixels, name),
        "png": lambda: png16_bytes(pixels, name),
    }
    if source_format not in encoders:
        raise InputError(f"{name}: no writer for source format {source_format!r}")
    return encoders[source_format]()


def write_like(
    pixels: np.ndarray,
    stack: ImageStack,
    out: str | Path,
    *,
    compression_ratio: float | Sequence[float] | None = None,
    method: str = "MEDVAE",
    description: str | None = None,
    series_instance_uid: str | None = None,
) -> list[Path]:
    """Write decoded ``pixels`` (same shape as ``stack.pixels``) in the source's format.

    DICOM stacks go to the folder ``out``, one file per source file with the
    source's name (frames of a multi-frame file stay together), through
    :func:`~medvae.io.dicom_writer.decoded_dicom_bytes`; ``compression_ratio`` (one value, or
    one per slice) is then required. NIfTI, NRRD, ``.npy`` and multi-page TIFF
    volumes go to the file ``out`` (or into the folder ``out`` under the
    source's name); PNG/TIFF slice stacks to the folder ``out``, one file each.

    Returns:
        list of Path: The files written.

    Raises:
        medvae.errors.InputError: Wrong shape, missing ratio for DICOM, or an output that would
            overwrite a source file.
    """
    pixels = np.asarray(pixels)
    if pixels.shape != stack.pixels.shape:
        raise InputError(f"{out}: decoded shape {pixels.shape} differs from the source's {stack.pixels.shape}")
    out = Path(out)
    sources = list(dict.fromkeys(stack.paths))
    groups = {src: [i for i, p in enumerate(stack.paths) if p == src] for src in sources}
    single_file = len(sources) == 1 and stack.source_format != "dicom"
    targets = {src: (out / src.name if out.is_dir() or not single_file else out) for src in sources}
    inputs = {p.resolve() for p in sources}
    for target in targets.values():
        if target.resolve() in inputs:
            raise InputError(f"{target}: refusing to overwrite a source file")

    if stack.source_format == "dicom" and compression_ratio is None:
        raise InputError(f"{out}: writing DICOM needs the compression ratio")
    ratios = None if compression_ratio is None else np.broadcast_to(np.asarray(compression_ratio, dtype=float), (len(stack),))
    written = []
    for src, idx in groups.items():
        target = targets[src]
        ds = stack.datasets[idx[0]] if stack.source_format == "dicom" else None  # type: ignore[index]
        whole = len(idx) > 1 or stack.source_format in ("nifti", "nrrd") or (ds is not None and "NumberOfFrames" in ds)
        data = source_bytes(
            pixels[idx] if whole else pixels[idx[0]], stack.source_format, header=stack.header, dataset=ds,
            compression_ratio=None if ratios is None else float(np.mean(ratios[idx])), name=str(target),
            gz=str(target).lower().endswith(".gz"), method=method, description=description,
            series_instance_uid=series_instance_uid,
        )
        written.append(_write_bytes(target, data))
    return written


def _write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
