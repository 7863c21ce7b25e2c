"""``medvae.io.read``: one entry point for every supported file and folder."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medvae.errors import InputError
from medvae.io.dicom import has_dicom_prefix, read_dicom_files
from medvae.io.formats import read_nifti, read_npy, read_nrrd, read_png, read_tiff
from medvae.io.files import walk
from medvae.io.series import DICOM_SUFFIXES, find_series, is_dicom_file
from medvae.io.stack import ImageStack

#: Reader of each non-DICOM format, by file suffix.
READERS: dict[str, tuple[str, Callable[..., ImageStack]]] = {
    ".nii": ("nifti", read_nifti),
    ".nii.gz": ("nifti", read_nifti),
    ".nrrd": ("nrrd", read_nrrd),
    ".nhdr": ("nrrd", read_nrrd),
    ".png": ("png", read_png),
    ".tif": ("tiff", read_tiff),
    ".tiff": ("tiff", read_tiff),
    ".npy": ("npy", read_npy),
}


def detect_format(path: str | Path) -> str:
    """``dicom``, ``nifti``, ``nrrd``, ``png``, ``tiff`` or ``npy`` for a file.

    The suffix decides; a file with another suffix (or none, as PACS exports
    often are) is DICOM if it has the ``DICM`` prefix.

    Raises:
        medvae.errors.InputError: Not one of the supported formats.
    """
    path = Path(path)
    suffix = format_suffix(path)
    if suffix in READERS:
        return READERS[suffix][0]
    if suffix in DICOM_SUFFIXES or has_dicom_prefix(path):
        return "dicom"
    raise InputError(
        f"{path}: unsupported file type; MedVAE reads DICOM, NIfTI, NRRD, PNG, TIFF and .npy"
    )


def read(path: str | Path, *, series: str | None = None, modality: str | None = None) -> ImageStack:
    """Read the stored integers of a file or folder, with what the codec needs.

    Args:
        path (str or Path): A DICOM file (single- or multi-frame), a folder holding one DICOM
            series (searched recursively; slices ordered by *Image Position (Patient)* along the
            slice normal, then *Instance Number*), a NIfTI, NRRD, PNG, TIFF or ``.npy`` file, or
            a folder of same-sized PNG/TIFF/``.npy`` slices (stacked in natural name order).
        series (str, optional): *Series Instance UID* to read when a folder holds several
            series.
        modality (str, optional): Modality to report (``CT``, ``MR``...); overrides the file's,
            and is the only source for formats without one (they report ``OT`` otherwise).

    Returns:
        ImageStack: Pixels as ``(slices, rows, columns)`` uint8/uint16/int16 plus metadata.

    Raises:
        medvae.errors.InputError: Missing path, unsupported or unreadable file, colour or
            non-image object, a folder with no images or with several series and no ``series``.
    """
    path = Path(path)
    if path.is_dir():
        stack = _read_folder(path, series)
    elif path.is_file():
        stack = _read_file(path)
    else:
        raise InputError(f"{path}: no such file or folder")
    if modality:
        stack.modality = modality
    return stack


def _read_file(path: Path) -> ImageStack:
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom_files([path])
    return READERS[format_suffix(path)][1](path)


def _read_folder(folder: Path, series_uid: str | None) -> ImageStack:
    found = find_series(folder)
    if series_uid is not None:
        found = [s for s in found if s.uid == series_uid]
        if not found:
            raise InputError(f"{folder}: no image series with SeriesInstanceUID {series_uid}")
    if len(found) > 1:
        listing = "; ".join(f"{s.uid} ({s.modality}, {len(s.paths)} files)" for s in found)
        raise InputError(
            f"{folder}: holds {len(found)} image series ({listing}); pass series=UID to pick one"
        )
    if found:
        return read_dicom_files(found[0].paths)
    others = [p for p in walk(folder) if format_suffix(p) in READERS and not is_dicom_file(p)]
    if len(others) == 1:
        return _read_file(others[0])
    slices = [p for p in others if READERS[format_suffix(p)][0] in ("png", "tiff", "npy")]
    if not slices or len(slices) != len(others):
        raise InputError(
            f"{folder}: no DICOM series and no single image or stack of 2-D slices to read"
        )
    return _stack_slices(sorted(slices, key=_natural_key))


def _stack_slices(paths: list[Path]) -> ImageStack:
    """Stack single-image files into one :class:`ImageStack`."""
    stacks = [_read_file(p) for p in paths]
    first = stacks[0]
    for path, stack in zip(paths, stacks):
        if stack.pixels.shape[1:] != first.pixels.shape[1:] or stack.pixels.dtype != first.pixels.dtype:
            raise InputError(
                f"{path}: {stack.pixels.shape[1:]} {stack.pixels.dtype} differs from "
                f"{paths[0].name}'s {first.pixels.shape[1:]} {first.pixels.dtype}; cannot stack"
            )
    pixels = np.concatenate([s.pixels for s in stacks])
    return ImageStack(
        pixels=pixels,
        bits_stored=max(s.bits_stored for s in stacks),
        signed=first.signed,
        modality=first.modality,
        paths=[p for s in stacks for p in s.paths],
        frames=[f for s in stacks for f in s.frames],
        source_format=first.source_format,
    )


def format_suffix(path: Path) -> str:
    """Lower-case suffix that names a format (``.nii.gz`` counts as one)."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _natural_key(path: Path) -> list:
    """Sort key that puts ``slice2`` before ``slice10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]
