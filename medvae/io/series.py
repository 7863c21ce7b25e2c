"""Find DICOM series in a folder tree and put their slices in anatomical order.

Slices are ordered by their position along the slice normal (the cross product
of the two *Image Orientation (Patient)* direction cosines, dotted with *Image
Position (Patient)*), which is right for axial, sagittal, coronal and oblique
stacks alike; *Instance Number* breaks ties and orders series without geometry;
the file name is the last resort.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medvae.io.dicom import NON_IMAGE_CLASSES, has_dicom_prefix
from medvae.io.files import walk

log = logging.getLogger(__name__)

#: Suffixes taken as DICOM without looking inside the file.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class SeriesInfo:
    """One DICOM series found on disk.

    Attributes:
        uid (str): *Series Instance UID* (the folder path for files that lack one).
        paths (list of Path): Its files, in slice order.
        patient_id, modality, description (str): *Patient ID*, *Modality* and *Series
            Description* of its first file.
    """

    uid: str
    paths: list[Path] = field(default_factory=list)
    patient_id: str = ""
    modality: str = ""
    description: str = ""


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm``/``.dicom``/``.ima`` file or any file with the ``DICM`` prefix."""
    if path.name == "DICOMDIR":
        return False
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_prefix(path)


def find_series(folder: str | Path) -> list[SeriesInfo]:
    """All image series under ``folder``, each with its files in slice order.

    Only headers are read. Files that are not DICOM, or DICOM objects that are
    no image (SR, RT Structure Set, RT Plan, RT Dose, segmentations...), are
    skipped and logged; series come out sorted by patient, modality and UID.
    """
    folder = Path(folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in walk(folder):
        if not is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_dicom_prefix(path))
        except Exception as exc:  # unreadable headers are skipped, never fatal in a scan
            log.info("skipping %s: not a readable DICOM file (%s)", path, exc)
            continue
        if not is_image_header(ds):
            log.info("skipping %s: %s is not an image", path, _class_name(ds))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or path.parent)
        groups[uid].append((path, ds))
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        series.append(
            SeriesInfo(
                uid=uid,
                paths=order_slices(members),
                patient_id=str(first.get("PatientID", "") or ""),
                modality=str(first.get("Modality", "") or ""),
                description=str(first.get("SeriesDescription", "") or ""),
            )
        )
    return sorted(series, key=lambda s: (s.patient_id, s.modality, s.uid))


def is_image_header(ds: Dataset) -> bool:
    """True if a header (read without pixel data) describes an image MedVAE may code."""
    if "Rows" not in ds or "Columns" not in ds:
        return False
    return not any(word in _class_name(ds) for word in NON_IMAGE_CLASSES)


def order_slices(members: list[tuple[Path, Dataset]]) -> list[Path]:
    """Paths of ``members`` (path, header) sorted by position along the slice normal.

    Falls back to *Instance Number*, then to the file name, where geometry is
    missing or the slices do not share one orientation.
    """
    geometry = [_geometry(ds) for _, ds in members]
    use_geometry = all(g is not None for g in geometry) and len({g[0] for g in geometry}) == 1  # type: ignore[index]

    def key(i: int) -> tuple:
        path, ds = members[i]
        if use_geometry:
            return (geometry[i][1], _instance_number(ds), path.name)  # type: ignore[index]
        return (_instance_number(ds), path.name)

    return [members[i][0] for i in sorted(range(len(members)), key=key)]


def _geometry(ds: Dataset) -> tuple[tuple[float, ...], float] | None:
    """(rounded orientation cosines, position along the slice normal), or None if absent or invalid."""
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if iop.shape != (6,) or ipp.shape != (3,):
        return None
    normal = np.cross(iop[:3], iop[3:])
    return tuple(np.round(iop, 4).tolist()), float(np.dot(normal, ipp))


def _instance_number(ds: Dataset) -> float:
    try:
        return float(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        return float("inf")


def _class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "unknown SOP class")
