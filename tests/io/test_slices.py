"""The one slice record and the one manifest reader that training, validation and evaluation share."""

from __future__ import annotations

import numpy as np

from medvae.evaluation.datasets import images_from_manifest
from medvae.io.slices import evenly_spaced_indices, file_slices, manifest_slices


def _manifest(tmp_path):
    rows = ["path,modality,patient,split"]
    for name, patient, split, slices in [("a.npy", "p1", "Train", 5), ("b.npy", "p2", "test", 1), ("c.npy", "p3", "test", 2)]:
        np.save(tmp_path / name, np.arange(slices * 12, dtype=np.int16).reshape(slices, 3, 4) - 7)
        rows.append(f"{name},{'MR' if name == 'c.npy' else 'CT'},{patient},{split}")
    (tmp_path / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "MANIFEST.csv"


def test_manifest_slices_select_by_split_modality_and_patient_and_name_their_source(tmp_path):
    manifest = _manifest(tmp_path)
    train = manifest_slices(manifest, "TRAIN")  # case-insensitive, as the manifest's own split column
    assert [(s.patient, s.split, s.file, s.index) for s in train] == [("p1", "train", "a.npy", i) for i in range(5)]
    assert train[2].name == "p1/a.npy[2]" and train[2].shape == (3, 4) and train[2].signed
    np.testing.assert_array_equal(train[2].pixels, np.arange(24, 36, dtype=np.int16).reshape(3, 4) - 7)
    assert [s.file for s in manifest_slices(manifest, "test", modalities=["mr"])] == ["c.npy", "c.npy"]
    assert [s.patient for s in manifest_slices(manifest, None, patients=["p2"])] == ["p2"]
    assert [s.index for s in manifest_slices(manifest, "train", max_slices=3)] == [0, 2, 4]
    assert manifest_slices(manifest, "val") == []


def test_evaluation_and_training_read_the_same_slices_from_a_manifest(tmp_path):
    manifest = _manifest(tmp_path)
    evaluated = images_from_manifest(manifest, "test")
    listed = manifest_slices(manifest, "test")
    assert [(s.file, s.index, s.patient) for s in evaluated] == [(s.file, s.index, s.patient) for s in listed]


def test_file_slices_take_evenly_spaced_slices_and_a_label(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((10, 2, 2), np.uint16))
    slices = file_slices(path, patient="x", max_slices=4, file="label.npy")
    assert [s.index for s in slices] == evenly_spaced_indices(10, 4) == [0, 3, 6, 9]
    assert {s.file for s in slices} == {"label.npy"} and not slices[0].signed


def test_files_written_like_the_source_are_the_bytes_of_the_one_encoder(tmp_path):
    """``write_like`` (library) and the command line's restored files share ``source_bytes``."""
    import nibabel as nib

    from medvae import io as mio
    from medvae.io.writers import source_bytes, write_like

    volume = (np.arange(3 * 4 * 5, dtype=np.int16).reshape(5, 4, 3) - 20).transpose(2, 1, 0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "v.nii.gz")
    stack = mio.read(tmp_path / "v.nii.gz")
    decoded = stack.pixels + 1
    (written,) = write_like(decoded, stack, tmp_path / "out.nii.gz")
    assert written.read_bytes() == source_bytes(decoded, "nifti", header=stack.header)
    np.testing.assert_array_equal(mio.read(written).pixels, decoded)
    (plain,) = write_like(decoded, stack, tmp_path / "out.nii")
    assert plain.read_bytes() == source_bytes(decoded, "nifti", header=stack.header, gz=False)
