"""The corpus manifest: one CSV row per image file, read one way by training and evaluation.

Columns ``path`` (relative to the manifest's folder), ``modality``, ``patient`` and
``split`` (``train``, ``val`` or ``test``, any case). Splits are by patient: a patient in
two splits is refused, so no patient leaks from training into testing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medvae.errors import InputError

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "modality", "patient", "split")


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest; ``path`` is resolved against the manifest's folder."""

    path: Path
    modality: str
    patient: str
    split: str


def read_manifest(manifest: str | Path) -> list[ManifestRow]:
    """Rows of a manifest CSV, checked for columns, split names and patient-level splits.

    Raises:
        medvae.errors.InputError: Missing file or columns, an unknown split, or a patient in two
            splits.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError(f"{manifest}: no such manifest")
    try:
        f = open(manifest, newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{manifest}: cannot read manifest ({exc.strerror})") from None
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{manifest}: missing column(s) {', '.join(missing)}")
        rows = [
            ManifestRow(
                path=manifest.parent / r["path"],
                modality=r["modality"].strip(),
                patient=r["patient"].strip(),
                split=r["split"].strip().lower(),
            )
            for r in reader
        ]
    patient_split: dict[str, str] = {}
    for row in rows:
        if row.split not in SPLITS:
            raise InputError(f"{manifest}: unknown split {row.split!r} for {row.path.name} (use {', '.join(SPLITS)})")
        if patient_split.setdefault(row.patient, row.split) != row.split:
            raise InputError(
                f"{manifest}: patient {row.patient} is in both {patient_split[row.patient]} and "
                f"{row.split}; splits must be by patient"
            )
    return rows
