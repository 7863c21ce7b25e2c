"""Write decoded images in the non-DICOM formats, and any stack "like its source".

Every writer is atomic (temporary file in the destination folder, then rename)
and keeps the dtype, so reading the output back gives the same integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvae.errors import InputError
from medvae.io.dicom_writer import write_decoded_dicom
from medvae.io.files import atomic_path, gzip_bytes
from medvae.io.stack import ImageStack


def write_png16(image: np.ndarray, path: str | Path) -> Path:
    """Write a 2-D uint16 (16-bit PNG) or uint8 (8-bit PNG) grayscale image.

    Raises
    ------
    medvae.errors.InputError
        Signed or other dtypes (PNG holds no negative values; use
        :func:`write_tiff` or :func:`write_npy`), or not 2-D.
    """
    import imagecodecs

    image = np.asarray(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"{path}: PNG needs a 2-D uint8 or uint16 image, got {image.shape} {image.dtype}"
        )
    data = imagecodecs.png_encode(np.ascontiguousarray(image))
    return _write_bytes(path, data)


def write_tiff(image: np.ndarray, path: str | Path) -> Path:
    """Write a 2-D image, or a ``(slices, rows, columns)`` stack as pages, to TIFF (any codec dtype)."""
    import imagecodecs

    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(f"{path}: TIFF needs a 2-D image or a 3-D stack, got {image.shape}")
    return _write_bytes(path, imagecodecs.tiff_encode(np.ascontiguousarray(image)))


def write_npy(image: np.ndarray, path: str | Path) -> Path:
    """Write an array to ``.npy`` exactly (no pickling)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(image), allow_pickle=False)
    return Path(path)


def write_nifti(volume: np.ndarray, path: str | Path, header: Any = None) -> Path:
    """Write ``(slices, rows, columns)`` (or one 2-D slice) to NIfTI; gzip for ``.gz`` names.

    ``header`` is the source's nibabel header (``ImageStack.header``): its
    affine, units and intent are kept, its scaling too, so the stored integers
    keep their meaning. The layout is the inverse of :func:`medvae.io.read`'s.
    """
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
    if str(path).lower().endswith(".gz"):
        raw = gzip_bytes(raw)
    return _write_bytes(path, raw)


def write_nrrd(volume: np.ndarray, path: str | Path, header: dict | None = None) -> Path:
    """Write ``(slices, rows, columns)`` (or one 2-D slice) to an attached-header NRRD.

    ``header`` is the source's pynrrd header (``ImageStack.header``): its space,
    directions and origin are kept.
    """
    import nrrd

    volume = np.asarray(volume)
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    keep = ("space", "space directions", "space origin", "kinds", "space units", "endian")
    out = {k: v for k, v in (header or {}).items() if k in keep}
    out["encoding"] = "gzip"
    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(volume.transpose(2, 1, 0)), out)
    return Path(path)


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
    :func:`~medvae.io.write_decoded_dicom`; ``compression_ratio`` (one value, or
    one per slice) is then required. NIfTI, NRRD, ``.npy`` and multi-page TIFF
    volumes go to the file ``out`` (or into the folder ``out`` under the
    source's name); PNG/TIFF slice stacks to the folder ``out``, one file each.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    medvae.errors.InputError
        Wrong shape, missing ratio for DICOM, or an output that would overwrite
        a source file.
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

    if stack.source_format == "dicom":
        if compression_ratio is None:
            raise InputError(f"{out}: writing DICOM needs the compression ratio")
        ratios = np.broadcast_to(np.asarray(compression_ratio, dtype=float), (len(stack),))
        written = []
        for src, idx in groups.items():
            ds = stack.datasets[idx[0]]  # type: ignore[index]
            image = pixels[idx] if "NumberOfFrames" in ds else pixels[idx[0]]
            written.append(
                write_decoded_dicom(
                    image, ds, targets[src],
                    compression_ratio=float(np.mean(ratios[idx])), method=method,
                    description=description, series_instance_uid=series_instance_uid,
                )
            )
        return written

    writers = {
        "nifti": lambda v, p: write_nifti(v, p, stack.header),
        "nrrd": lambda v, p: write_nrrd(v, p, stack.header),
        "npy": lambda v, p: write_npy(v if len(v) > 1 else v[0], p),
        "tiff": lambda v, p: write_tiff(v if len(v) > 1 else v[0], p),
        "png": lambda v, p: write_png16(v[0], p),
    }
    write = writers[stack.source_format]
    return [write(pixels[idx], targets[src]) for src, idx in groups.items()]


def _write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
