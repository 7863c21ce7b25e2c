"""Training and evaluation data: 2-D slices of a corpus, split by patient.

A corpus is described either by a manifest (``MANIFEST.csv`` with columns
``path, modality, patient, split`` and optionally ``source, note, sha256``;
paths relative to the manifest's folder) or by a plain folder (one subfolder
per patient, or DICOM series told apart by *Patient ID*). Splits are always by
patient, never by slice, so no patient's anatomy leaks from training into
evaluation.

:class:`SliceDataset` holds every slice of a split in memory (int16 where the
values fit, else the native uint8/uint16), so an epoch costs no I/O, and serves
``(1, crop, crop)`` float32 crops normalized exactly as the codec normalizes
the full slice (:func:`medvae.intensity.default_value_range` of the whole
slice, then :func:`medvae.intensity.normalize`). :func:`medvae.io.slices.manifest_slices`
and :func:`folder_slices` list the full, uncropped slices of a split (:class:`~medvae.io.slices.Slice`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvae.errors import InputError, MedVAEError
from medvae.intensity import default_value_range, normalize
from medvae.io import find_series, read
from medvae.io.dicom import read_dicom_files
from medvae.io.reader import READERS, format_suffix
from medvae.io.files import walk
from medvae.io.slices import Slice, manifest_slices, slices_of
from medvae.io.series import is_dicom_file

log = logging.getLogger(__name__)



def folder_slices(
    folder: str | Path,
    split: str | None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    modalities: Iterable[str] | None = None,
) -> list[Slice]:
    """Every full slice of one split of a plain folder, splits assigned by patient hash.

    A patient is the first-level subfolder a file sits in; for files directly
    in ``folder`` it is the DICOM *Patient ID* (else the series UID) or the
    file's stem. Each patient's split is :func:`patient_split`. Files that cannot
    be read (colour, non-image...) are skipped with a logged warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    wanted = _modality_set(modalities)
    records = []
    for patient, load in _folder_units(folder):
        this_split = patient_split(patient, val_fraction, test_fraction, seed)
        if split is not None and this_split != split:
            continue
        try:
            stack = load()
        except MedVAEError as exc:
            log.warning("skipping: %s", exc)
            continue
        if wanted and stack.modality.upper() not in wanted:
            continue
        records.extend(slices_of(stack, patient=patient, split=this_split))
    return records


def patient_split(patient: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> str:
    """``train``, ``val`` or ``test`` for a patient, from a hash of ``seed`` and its ID.

    Deterministic on every machine and independent of which other patients
    exist, so adding patients never moves old ones between splits.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise ValueError(f"bad split fractions val={val_fraction}, test={test_fraction}")
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()
    u = int(digest[:15], 16) / 16**15
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


class SliceDataset(Dataset):
    """Crops of 2-D slices, normalized as the codec normalizes, for training and validation.

    ``ds[i]`` is a float32 tensor ``(1, crop_size, crop_size)`` in [0, 1] cut
    from slice ``i``, normalized with the value range of the full slice. With
    ``train`` the crop position is random and one of the 8 flips/90° rotations is
    applied; otherwise the crop is the centre one, so validation is repeatable.
    Random draws are seeded per item from ``seed`` and torch's global RNG, which
    differs in every DataLoader worker: workers do not repeat each other, and
    ``torch.manual_seed`` makes a run repeatable.

    Args:
        records (sequence of Slice): The slices (their pixels are copied to int16 where the
            values fit).
        crop_size (int): Side of the square crops.
        train (bool): Random crops and augmentation (True) or centre crops (False).
        small ({"pad", "skip"}): Slices smaller than the crop are padded with their minimum (0
            after normalization) or left out.
        seed (int): Mixed into the crop generator.
    """

    def __init__(
        self,
        records: Sequence[Slice],
        *,
        crop_size: int = 256,
        train: bool = False,
        small: str = "pad",
        seed: int = 0,
    ) -> None:
        if small not in ("pad", "skip"):
            raise ValueError(f"small must be 'pad' or 'skip', got {small!r}")
        if crop_size < 1:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        self.crop_size = int(crop_size)
        self.train = bool(train)
        self.small = small
        self.seed = int(seed)
        kept = [r for r in records if small == "pad" or min(r.pixels.shape) >= crop_size]
        if len(kept) < len(records):
            log.info("left out %d slice(s) smaller than %d", len(records) - len(kept), crop_size)
        self.records = [dataclasses.replace(r, pixels=_compact(r.pixels)) for r in kept]
        self.ranges = [default_value_range(r.pixels) for r in self.records]

    @classmethod
    def from_manifest(
        cls,
        manifest_path: str | Path,
        split: str,
        *,
        crop_size: int = 256,
        modalities: Iterable[str] | None = None,
        train: bool | None = None,
        small: str = "pad",
        seed: int = 0,
    ) -> SliceDataset:
        """The slices of ``split`` in a manifest; ``train`` defaults to ``split == "train"``."""
        records = manifest_slices(manifest_path, split, modalities=modalities)
        return cls(records, crop_size=crop_size, train=split == "train" if train is None else train,
                   small=small, seed=seed)

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        split: str,
        *,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        crop_size: int = 256,
        modalities: Iterable[str] | None = None,
        train: bool | None = None,
        small: str = "pad",
    ) -> SliceDataset:
        """The slices of ``split`` in a plain folder (see :func:`folder_slices`)."""
        records = folder_slices(folder, split, val_fraction=val_fraction, test_fraction=test_fraction,
                                seed=seed, modalities=modalities)
        return cls(records, crop_size=crop_size, train=split == "train" if train is None else train,
                   small=small, seed=seed)

    @property
    def patients(self) -> list[str]:
        """Sorted IDs of the patients in this dataset."""
        return sorted({r.patient for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self.records[index].pixels
        lo, hi = self.ranges[index]
        rng = self._generator() if self.train else None
        crop = self._crop(pixels, lo, rng)
        if rng is not None:
            crop = np.rot90(crop, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(normalize(crop, lo, hi))[np.newaxis])

    def _crop(self, pixels: np.ndarray, fill: int, rng: np.random.Generator | None) -> np.ndarray:
        """A ``crop_size`` square: random with ``rng``, else centred; padded with ``fill``."""
        size = self.crop_size
        rows, cols = pixels.shape
        if rows < size or cols < size:
            padded = np.full((max(rows, size), max(cols, size)), fill, dtype=pixels.dtype)
            top, left = (padded.shape[0] - rows) // 2, (padded.shape[1] - cols) // 2
            padded[top : top + rows, left : left + cols] = pixels
            pixels, (rows, cols) = padded, padded.shape
        if rng is not None:
            top, left = int(rng.integers(rows - size + 1)), int(rng.integers(cols - size + 1))
        else:
            top, left = (rows - size) // 2, (cols - size) // 2
        return pixels[top : top + size, left : left + size]

    def _generator(self) -> np.random.Generator:
        """A generator for one item, seeded from ``seed`` and a draw of torch's global RNG.

        Torch's RNG is seeded differently in every DataLoader worker and reset by
        ``torch.manual_seed``, so workers never repeat each other and runs repeat.
        """
        return np.random.default_rng([self.seed, int(torch.randint(0, 2**62, ()))])


def _compact(pixels: np.ndarray) -> np.ndarray:
    """A compact in-memory copy: uint16 as int16 when every value fits, else unchanged.

    uint8 stays uint8 (one byte), and uint16 above 32767 stays uint16, so no
    value changes and no slice takes more than two bytes a pixel.
    """
    if pixels.dtype != np.uint16:
        return np.ascontiguousarray(pixels)
    info = np.iinfo(np.int16)
    if pixels.size and info.min <= int(pixels.min()) and int(pixels.max()) <= info.max:
        return pixels.astype(np.int16)
    return pixels


def _folder_units(folder: Path) -> list[tuple[str, Any]]:
    """``(patient, loader)`` for each DICOM series and each non-DICOM image file under ``folder``."""
    units: list[tuple[str, Any]] = []
    for series in find_series(folder):
        rel = series.paths[0].relative_to(folder)
        patient = rel.parts[0] if len(rel.parts) > 1 else (series.patient_id or series.uid)
        units.append((patient, lambda paths=series.paths: read_dicom_files(paths)))
    for path in walk(folder):
        if format_suffix(path) not in READERS or is_dicom_file(path):
            continue
        rel = path.relative_to(folder)
        patient = rel.parts[0] if len(rel.parts) > 1 else path.name[: -len(format_suffix(path))]
        units.append((patient, lambda p=path: read(p)))
    return units


def _modality_set(modalities: Iterable[str] | None) -> set[str]:
    if isinstance(modalities, str):
        modalities = [modalities]
    return {m.upper() for m in modalities or ()}
