"""pack_training_data: the train and val splits travel, volumes thinned, the test split stays."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medvae.errors import InputError
from medvae.io.slices import manifest_slices
from tools.pack_training_data import pack

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


@pytest.fixture
def manifest(tmp_path):
    root = tmp_path / "corpus"
    (root / "ct").mkdir(parents=True)
    volume = np.random.default_rng(0).integers(0, 4000, (20, 24, 30)).astype(np.int16)
    image = nib.Nifti1Image(volume, np.eye(4))
    image.header.set_slope_inter(1.0, -1024.0)  # stored integers + intercept = HU
    nib.save(image, str(root / "ct" / "volume.nii.gz"))
    shutil.copyfile(CT_SMALL, root / "ct" / "small.dcm")
    shutil.copyfile(CT_SMALL, root / "ct" / "held-out.dcm")
    rows = [
        {"path": "ct/volume.nii.gz", "modality": "CT", "patient": "a", "split": "train", "source": "", "note": "", "sha256": "x"},
        {"path": "ct/small.dcm", "modality": "CT", "patient": "b", "split": "val", "source": "", "note": "", "sha256": "y"},
        {"path": "ct/held-out.dcm", "modality": "CT", "patient": "c", "split": "test", "source": "", "note": "", "sha256": "z"},
    ]
    with (root / "MANIFEST.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "MANIFEST.csv", volume


def test_volumes_are_thinned_to_evenly_spaced_slices_with_their_values(manifest, tmp_path):
    path, volume = manifest
    out = tmp_path / "packed"
    rows = pack(path, out, max_slices=4)
    assert [r["split"] for r in rows] == ["train", "val"]
    assert not (out / "ct" / "held-out.dcm").exists()
    packed = manifest_slices(out / "MANIFEST.csv", "train")
    original = manifest_slices(path, "train")
    assert len(original) == 30 and len(packed) == 4
    chosen = [0, 10, 19, 29]  # np.linspace(0, 29, 4) rounded
    for slice_, index in zip(packed, chosen):
        np.testing.assert_array_equal(slice_.pixels, original[index].pixels)
        assert (slice_.slope, slice_.intercept) == (1.0, -1024.0)
    assert "thinned to 4 of 30 slices" in rows[0]["note"] and rows[0]["sha256"] == ""
    assert rows[1]["sha256"] == "y"  # copied unchanged: its checksum still holds
    val = manifest_slices(out / "MANIFEST.csv", "val")
    np.testing.assert_array_equal(val[0].pixels, manifest_slices(path, "val")[0].pixels)


def test_an_existing_folder_is_not_overwritten(manifest, tmp_path):
    out = tmp_path / "packed"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        pack(manifest[0], out, max_slices=4)
    assert (out / "keep.txt").read_text() == "mine"


def test_a_short_manifest_packs_and_a_path_leaving_its_folder_is_refused(manifest, tmp_path):
    path, _ = manifest
    rows = list(csv.DictReader(path.open()))
    short = path.parent / "short.csv"
    with short.open("w", newline="") as f:  # the four required columns only
        writer = csv.DictWriter(f, fieldnames=["path", "modality", "patient", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert len(pack(short, tmp_path / "short", max_slices=100)) == 2
    escaping = path.parent / "escaping.csv"
    escaping.write_text("path,modality,patient,split\n../corpus/ct/small.dcm,CT,b,train\n")
    with pytest.raises(InputError, match="outside"):
        pack(escaping, tmp_path / "escaping", max_slices=4)


def test_modalities_keep_only_their_rows(manifest, tmp_path):
    """``modalities`` keeps only those rows; none left is an error that names them."""
    path, _ = manifest
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["modality"] = "MR"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    kept = pack(path, tmp_path / "mr", max_slices=4, modalities=("MR",))
    assert [row["path"] for row in kept] == ["ct/small.dcm"]
    assert [s.modality for s in manifest_slices(tmp_path / "mr" / "MANIFEST.csv", split="val")] == ["MR"]
    assert not (tmp_path / "mr" / "ct" / "volume.nii.gz").exists()
    with pytest.raises(InputError, match="no rows of DX"):
        pack(path, tmp_path / "dx", max_slices=4, modalities=("DX",))
