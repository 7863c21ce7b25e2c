"""What an evaluation runs on: 2-D slices at native bit depth, with their provenance.

A source is a corpus manifest (CSV with ``path, modality, patient, split``
columns; paths relative to the manifest), a folder (every readable image file
under it), or image files. Every file goes through :func:`medvae.io.read`, so
evaluation sees exactly the integers the codec would be given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


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
