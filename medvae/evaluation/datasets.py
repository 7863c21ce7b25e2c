"""What an evaluation runs on: 2-D slices at native bit depth, with their provenance.

A source is a corpus manifest (CSV with ``path, modality, patient, split``
columns; paths relative to the manifest), a folder (every readable image file
under it), or image files. Every file goes through :func:`medvae.io.read`, so
evaluation sees exactly the integers the codec would be given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from medvae.errors import InputError
from medvae.io import detect_format
from medvae.io.files import walk
from medvae.io.slices import Slice, file_slices, manifest_slices


def images_from_manifest(
    manifest: str | Path,
    split: str | None = None,
    *,
    modality: str | None = None,
    max_slices: int | None = None,
) -> list[Slice]:
    """Slices of a corpus manifest's ``split`` (all splits when None), optionally one modality
    (:func:`medvae.io.slices.manifest_slices`); refuses a selection with no slices."""
    images = manifest_slices(manifest, split, modalities=[modality] if modality else None, max_slices=max_slices)
    if not images:
        raise InputError(f"{manifest}: no rows with split={split!r} modality={modality!r}")
    return images


def images_from_folder(folder: str | Path, *, modality: str | None = None, max_slices: int | None = None) -> list[Slice]:
    """Every readable image file under ``folder`` (:func:`medvae.io.files.walk`; files that are not images are skipped)."""
    folder = Path(folder)
    images: list[Slice] = []
    for path in walk(folder):
        try:
            detect_format(path)
            images += file_slices(path, modality=modality, max_slices=max_slices, file=str(path.relative_to(folder)))
        except InputError:
            continue
    if not images:
        raise InputError(f"{folder}: no readable images")
    return images


def load_images(
    sources: Iterable[str | Path],
    split: str | None = None,
    *,
    modality: str | None = None,
    max_slices: int | None = None,
    limit: int | None = None,
) -> list[Slice]:
    """Images from any mix of manifests (``*.csv``), folders and files, in order.

    ``split`` applies to manifests; ``modality`` filters manifests and sets
    the modality of files that do not declare one; ``max_slices`` caps slices
    per volume (evenly spaced); ``limit`` caps the total.
    """
    images: list[Slice] = []
    for source in sources:
        path = Path(source)
        if path.suffix.lower() == ".csv":
            images += images_from_manifest(path, split, modality=modality, max_slices=max_slices)
        elif path.is_dir():
            images += images_from_folder(path, modality=modality, max_slices=max_slices)
        elif path.is_file():
            images += file_slices(path, modality=modality, max_slices=max_slices)
        else:
            raise InputError(f"{path}: no such file or folder")
    if modality:
        images = [im for im in images if im.modality == modality.upper()]
    if limit:
        images = images[:limit]
    if not images:
        raise InputError("no images to evaluate")
    return images


def group_series(images: Sequence[Slice]) -> list[list[int]]:
    """The series among ``images``, as lists of their indexes in slice order.

    A series is the slices of one patient, modality, shape and dtype that come from one
    multi-slice file (a NIfTI/NRRD volume, a multi-frame DICOM) or, for one file per slice,
    from one folder and one DICOM Series Instance UID. Slices are ordered by their position
    along the slice normal (DICOM Image Position and Orientation) when every slice has one,
    else by file and index.
    """
    volumes = {im.file for im in images if im.index > 0}
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        source = im.file if im.file in volumes else str(Path(im.file).parent)
        uid = str(getattr(im.dataset, "SeriesInstanceUID", ""))  # two series in one folder stay apart
        groups.setdefault((im.patient, im.modality, source, uid, im.shape, im.pixels.dtype.str), []).append(i)
    ordered = []
    for group in groups.values():
        positions = {i: _slice_position(images[i]) for i in group}
        if None in positions.values():
            ordered.append(sorted(group, key=lambda i: (images[i].file, images[i].index)))
        else:
            ordered.append(sorted(group, key=positions.__getitem__))
    return ordered


def _slice_position(image: Slice) -> float | None:
    """Position along the slice normal, from the DICOM dataset, or None."""
    ds = image.dataset
    position = getattr(ds, "ImagePositionPatient", None)
    orientation = getattr(ds, "ImageOrientationPatient", None)
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return float(np.dot(normal, np.asarray(position, float)))
