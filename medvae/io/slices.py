"""One 2-D slice at native bit depth with its provenance, and the one reader of a manifest's slices.

Training, validation, evaluation and ``medvae data`` all work on :class:`Slice` records
made by :func:`slices_of`, and all select a manifest's slices with :func:`manifest_slices`,
so they cannot disagree on which slices a split holds or on what a slice carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvae.intensity import default_value_range
from medvae.io.manifest import read_manifest
from medvae.io.reader import read
from medvae.io.stack import ImageStack


@dataclass
class Slice:
    """One full 2-D slice.

    Attributes:
        pixels: stored integers (H, W), uint8/uint16/int16.
        bits_stored: significant bits (DICOM Bits Stored); the PSNR peak is ``2**bits − 1``.
        modality: ``CT``, ``MR``, ``CR`` ...
        patient: who the slice belongs to (splits are by patient).
        file: the file it was read from (relative to its manifest when listed in one).
        index: the slice's index in what :func:`medvae.io.read` returned for ``file``.
        split: ``train``, ``val`` or ``test`` when known, else "".
        slope, intercept: rescale to physical units (HU for CT).
        signed: whether the source stores signed integers.
        dataset: the source DICOM dataset (to write a decoded slice back), else None.
    """

    pixels: np.ndarray
    bits_stored: int
    modality: str = "OT"
    patient: str = ""
    file: str = ""
    index: int = 0
    split: str = ""
    slope: float = 1.0
    intercept: float = 0.0
    signed: bool = False
    dataset: Any = None

    @property
    def name(self) -> str:
        """``patient/file-name[index]``: how logs and tables name the slice."""
        return f"{self.patient}/{Path(self.file).name}[{self.index}]"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    @property
    def value_range(self) -> tuple[int, int]:
        """(lo, hi) the codec maps to [0, 1] by default: the slice's own min and max."""
        return default_value_range(self.pixels)


def evenly_spaced_indices(n: int, max_slices: int | None) -> list[int]:
    """At most ``max_slices`` indices of ``range(n)``, evenly spaced, first and last included
    (all of them when ``max_slices`` is 0 or None)."""
    if not max_slices or n <= max_slices:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_slices)})


def slices_of(
    stack: ImageStack, *, patient: str, split: str = "", file: str | None = None, max_slices: int | None = None
) -> list[Slice]:
    """The slices of ``stack`` (or ``max_slices`` evenly spaced ones) as :class:`Slice` records;
    ``file`` names their source (default: each slice's own path)."""
    out = []
    for i in evenly_spaced_indices(len(stack), max_slices):
        slope, intercept = stack.rescale_of(i)
        out.append(
            Slice(
                pixels=np.ascontiguousarray(stack.pixels[i]),
                bits_stored=int(stack.bits_stored),
                modality=(stack.modality or "OT").upper(),
                patient=patient,
                file=file if file is not None else str(stack.paths[i]),
                index=i,
                split=split,
                slope=float(slope),
                intercept=float(intercept),
                signed=bool(stack.signed),
                dataset=stack.datasets[i] if stack.datasets is not None else None,
            )
        )
    return out


def file_slices(
    path: str | Path, *, patient: str | None = None, modality: str | None = None, max_slices: int | None = None,
    file: str | None = None,
) -> list[Slice]:
    """Every slice (or ``max_slices`` evenly spaced ones) of one image file or series folder;
    the patient defaults to the DICOM Patient ID, else the parent folder's name."""
    stack = read(path, modality=modality or None)
    if patient is None:
        ds = stack.datasets[0] if stack.datasets else None
        patient = str(getattr(ds, "PatientID", "") or Path(path).parent.name)
    return slices_of(stack, patient=patient, file=file or str(path), max_slices=max_slices)


def manifest_slices(
    manifest: str | Path,
    split: str | None = None,
    *,
    modalities: Iterable[str] | None = None,
    patients: Sequence[str] | None = None,
    max_slices: int | None = None,
) -> list[Slice]:
    """The slices of a manifest's ``split`` (all splits when None; case-insensitive), of the
    given ``modalities`` and ``patients`` when given, in manifest order; ``file`` is the
    path relative to the manifest."""
    manifest = Path(manifest)
    wanted_split = None if split is None else split.strip().lower()
    wanted_modalities = {m.strip().upper() for m in modalities or () if m.strip()}
    slices: list[Slice] = []
    for row in read_manifest(manifest):
        if wanted_split is not None and row.split != wanted_split:
            continue
        if wanted_modalities and row.modality.upper() not in wanted_modalities:
            continue
        if patients and row.patient not in patients:
            continue
        stack = read(row.path, modality=row.modality or None)
        label = row.path.relative_to(manifest.parent).as_posix()
        slices += slices_of(stack, patient=row.patient, split=row.split, file=label, max_slices=max_slices)
    return slices
