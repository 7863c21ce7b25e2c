"""What an evaluation runs on: 2-D slices at native bit depth, with their provenance.

A source is a corpus manifest (CSV with ``path, modality, patient, split``
columns; paths relative to the manifest), a folder (every readable image file
under it), or image files. Every file goes through :func:`medvae.io.read`, so
evaluation sees exactly the integers the codec would be given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from medvae.errors import InputError
from medvae.io.manifest import read_manifest
from medvae.metrics import CT_WINDOWS


@dataclass
class EvalImage:
    """One 2-D slice to evaluate on.

    Attributes:
        pixels: stored integers (H, W), uint8/uint16/int16.
        bits_stored: significant bits (DICOM Bits Stored); PSNR peak is 2**bits − 1.
        slope, intercept: rescale to physical units (HU for CT).
        modality: ``CT``, ``MR``, ``CR`` ...; CT images get windowed PSNR.
        patient, file, slice: provenance for the per-image table.
    """

    pixels: np.ndarray
    bits_stored: int
    slope: float = 1.0
    intercept: float = 0.0
    modality: str = "OT"
    patient: str = ""
    file: str = ""
    slice: int = 0
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    @property
    def value_range(self) -> tuple[int, int]:
        """(lo, hi) used to normalize for MS-SSIM: the slice's own min and max."""
        from medvae.intensity import default_value_range

        return default_value_range(self.pixels)


def evenly_spaced_indices(n: int, max_slices: int | None) -> list[int]:
    """At most ``max_slices`` indices of ``range(n)``, evenly spaced, first and last included
    (all of them when ``max_slices`` is 0 or None)."""
    if not max_slices or n <= max_slices:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_slices)})


def images_from_file(
    path: str | Path,
    *,
    patient: str | None = None,
    modality: str | None = None,
    max_slices: int | None = None,
    label: str | None = None,
) -> list[EvalImage]:
    """Every slice (or ``max_slices`` evenly spaced ones) of one image file or series folder."""
    from medvae.io import read

    stack = read(path, modality=modality or None)
    if patient is None:
        ds = stack.datasets[0] if stack.datasets else None
        patient = str(getattr(ds, "PatientID", "") or Path(path).parent.name)
    images = []
    for k in evenly_spaced_indices(len(stack), max_slices):
        slope, intercept = stack.rescale_of(k)
        mod = (stack.modality or "OT").upper()
        images.append(
            EvalImage(
                pixels=np.ascontiguousarray(stack.pixels[k]),
                bits_stored=int(stack.bits_stored),
                slope=float(slope),
                intercept=float(intercept),
                modality=mod,
                patient=patient,
                file=label or str(path),
                slice=int(k),
                windows=dict(CT_WINDOWS) if mod == "CT" else {},
            )
        )
    return images


def images_from_manifest(
    manifest: str | Path,
    split: str | None = None,
    *,
    modality: str | None = None,
    patients: Sequence[str] | None = None,
    max_slices: int | None = None,
) -> list[EvalImage]:
    """Slices of a corpus manifest's ``split`` (all splits when None), optionally one modality."""
    manifest = Path(manifest)
    wanted = None if split is None else split.strip().lower()
    chosen = [
        row
        for row in read_manifest(manifest)
        if (wanted is None or row.split == wanted)
        and (modality is None or row.modality.upper() == modality.upper())
        and (not patients or row.patient in patients)
    ]
    if not chosen:
        raise InputError(f"{manifest}: no rows with split={split!r} modality={modality!r}")
    images: list[EvalImage] = []
    for row in chosen:
        images += images_from_file(
            row.path,
            patient=row.patient or None,
            modality=row.modality or None,
            max_slices=max_slices,
            label=row.path.relative_to(manifest.parent).as_posix(),
        )
    return images


def images_from_folder(folder: str | Path, *, modality: str | None = None, max_slices: int | None = None) -> list[EvalImage]:
    """Every readable image file under ``folder`` (:func:`medvae.io.files.walk`; files that are not images are skipped)."""
    from medvae.io import detect_format
    from medvae.io.files import walk

    folder = Path(folder)
    images: list[EvalImage] = []
    for path in walk(folder):
        try:
            detect_format(path)
            images += images_from_file(path, modality=modality, max_slices=max_slices, label=str(path.relative_to(folder)))
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
) -> list[EvalImage]:
    """Images from any mix of manifests (``*.csv``), folders and files, in order.

    ``split`` applies to manifests; ``modality`` filters manifests and sets
    the modality of files that do not declare one; ``max_slices`` caps slices
    per volume (evenly spaced); ``limit`` caps the total.
    """
    images: list[EvalImage] = []
    for source in sources:
        path = Path(source)
        if path.suffix.lower() == ".csv":
            images += images_from_manifest(path, split, modality=modality, max_slices=max_slices)
        elif path.is_dir():
            images += images_from_folder(path, modality=modality, max_slices=max_slices)
        elif path.is_file():
            images += images_from_file(path, modality=modality, max_slices=max_slices)
        else:
            raise InputError(f"{path}: no such file or folder")
    if modality:
        images = [im for im in images if im.modality == modality.upper()]
    if limit:
        images = images[:limit]
    if not images:
        raise InputError("no images to evaluate")
    return images
