"""Turns the ``data`` section of a config into the training dataset and validation slices."""

from __future__ import annotations

from typing import Any

from medvae.data import SliceDataset, folder_slices
from medvae.errors import MedVAEError
from medvae.io.slices import Slice, manifest_slices


def _source(dcfg: dict[str, Any]) -> tuple[str, str]:
    if dcfg.get("manifest"):
        return "manifest", dcfg["manifest"]
    if dcfg.get("folder"):
        return "folder", dcfg["folder"]
    raise MedVAEError("the config's data section needs data.manifest or data.folder")


def build_train_dataset(dcfg: dict[str, Any], seed: int):
    """Random, augmented crops of the ``train`` split (see :class:`medvae.data.SliceDataset`)."""
    kind, where = _source(dcfg)
    common = {"crop_size": int(dcfg["crop_size"]), "modalities": dcfg["modalities"], "small": dcfg["small"], "seed": seed}
    if kind == "manifest":
        return SliceDataset.from_manifest(where, "train", **common)
    return SliceDataset.from_folder(
        where, "train", val_fraction=dcfg["val_fraction"], test_fraction=dcfg["test_fraction"], **common
    )


def build_validation_images(dcfg: dict[str, Any]) -> list[Slice]:
    """Up to ``max_val_slices`` full slices of the validation split, spread over its patients.

    Slices are taken round-robin over patients, from the middle of each patient's
    stack outwards, so a long series does not crowd out the others.
    """
    kind, where = _source(dcfg)
    split = dcfg["val_split"]
    if kind == "manifest":
        records = manifest_slices(where, split, modalities=dcfg["modalities"])
    else:
        records = folder_slices(
            where, split, val_fraction=dcfg["val_fraction"], test_fraction=dcfg["test_fraction"], modalities=dcfg["modalities"]
        )
    by_patient: dict[str, list] = {}
    for record in records:
        by_patient.setdefault(record.patient, []).append(record)
    queues = []
    for patient_records in by_patient.values():
        middle = len(patient_records) // 2
        order = sorted(range(len(patient_records)), key=lambda i: (abs(i - middle), i))
        queues.append([patient_records[i] for i in order])
    chosen = []
    limit = int(dcfg["max_val_slices"])
    while queues and len(chosen) < limit:
        for queue in list(queues):
            if len(chosen) < limit:
                chosen.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return chosen
