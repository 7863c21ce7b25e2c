"""SliceDataset and the split helpers: crops, normalization, augmentation, patient splits."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import medvae.io as mio
from medvae.data import SliceDataset, patient_split
from medvae.io.slices import Slice, manifest_slices
from medvae.io.manifest import read_manifest
from medvae.errors import InputError
from medvae.intensity import default_value_range, normalize
from tests.conftest import CORPUS

MANIFEST = CORPUS / "MANIFEST.csv"
needs_corpus = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")


@pytest.fixture(scope="module")
def corpus_splits() -> dict[str, SliceDataset]:
    if not MANIFEST.is_file():
        pytest.skip(f"sample corpus not found at {CORPUS}")
    return {split: SliceDataset.from_manifest(MANIFEST, split) for split in ("train", "val", "test")}


def _record(pixels: np.ndarray, patient: str = "p") -> Slice:
    return Slice(pixels=pixels, bits_stored=16, modality="CT", patient=patient, file=f"{patient}.npy",
                 signed=pixels.dtype.kind == "i")


def _header_slice_count(split: str) -> int:
    """Slices in a split, from the files' headers only (not through medvae.io)."""
    import nibabel as nib
    import nrrd
    import pydicom

    total = 0
    with open(MANIFEST, newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            path = CORPUS / row["path"]
            if path.name.endswith(".nii.gz"):
                total += nib.load(path).shape[2]
            elif path.suffix == ".nrrd":
                total += int(nrrd.read_header(str(path))["sizes"][2])
            else:
                total += int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    return total


def _d4(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90° rotations of a square image."""
    rots = [np.rot90(image, k) for k in range(4)]
    return rots + [r[:, ::-1] for r in rots]


# --- the corpus --------------------------------------------------------------------------


@needs_corpus
def test_no_patient_in_two_splits(corpus_splits):
    patients = {split: set(ds.patients) for split, ds in corpus_splits.items()}
    assert all(patients.values())
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    with open(MANIFEST, newline="") as f:
        assert set().union(*patients.values()) == {row["patient"] for row in csv.DictReader(f)}


@needs_corpus
def test_training_crops_have_the_right_shape_and_range(corpus_splits):
    ds = corpus_splits["train"]
    assert ds.train and len(ds) == _header_slice_count("train")  # one item per slice
    torch.manual_seed(0)
    for i in range(0, len(ds), 17):
        x = ds[i]
        assert x.shape == (1, 256, 256) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert {r.pixels.dtype for r in ds.records} == {np.dtype(np.int16)}  # held compactly in memory


@needs_corpus
def test_eval_crops_are_centre_crops_normalized_like_the_codec(corpus_splits):
    """Val/test crops equal the codec's normalization of the full slice, cut at the centre."""
    ds = corpus_splits["test"]
    assert not ds.train
    for i in (0, len(ds) - 1):
        record = ds.records[i]
        full = mio.read(MANIFEST.parent / record.file).pixels[record.index]  # read again, independently
        lo, hi = default_value_range(full)
        rows, cols = full.shape
        top, left = (rows - 256) // 2, (cols - 256) // 2
        expected = normalize(full[top : top + 256, left : left + 256], lo, hi)
        assert torch.equal(ds[i][0], torch.from_numpy(expected))
        assert torch.equal(ds[i], ds[i])  # deterministic


@needs_corpus
def test_manifest_slices_lists_full_slices_with_provenance():
    records = manifest_slices(MANIFEST, "VAL")  # split names are case-insensitive
    assert {r.patient for r in records} == {"pdd-693-head", "cornerstone-neck"}
    for record in records:
        stack = mio.read(MANIFEST.parent / record.file)
        assert np.array_equal(record.pixels, stack.pixels[record.index])
        assert record.pixels.dtype == np.int16 and record.modality == "CT" and record.split == "val"
        assert (record.slope, record.intercept) == stack.rescale_of(record.index)
        assert record.dataset is not None
    mr = manifest_slices(MANIFEST, "train", modalities=["mr"])
    assert mr and {r.modality for r in mr} == {"MR"}


# --- crops and augmentation on synthetic slices --------------------------------------------


def test_training_crop_is_a_flipped_or_rotated_window_of_the_slice():
    image = np.arange(12 * 10, dtype=np.int16).reshape(12, 10) * 3 - 100  # every value unique
    lo, hi = default_value_range(image)
    ds = SliceDataset([_record(image)], crop_size=4, train=True)
    windows = [image[t : t + 4, l : l + 4] for t in range(9) for l in range(7)]
    torch.manual_seed(1)
    seen = set()
    for _ in range(60):
        crop = ds[0][0].numpy()
        matches = [(w, k) for w in range(len(windows)) for k, view in enumerate(_d4(windows[w]))
                   if np.array_equal(normalize(view, lo, hi), crop)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len({w for w, _ in seen}) > 10 and len({k for _, k in seen}) == 8


def test_crops_follow_torch_seed_so_workers_differ():
    """Same torch seed: same crops; another seed (as in another worker): other crops."""
    image = np.random.default_rng(0).integers(0, 4096, size=(64, 64)).astype(np.uint16)
    ds = SliceDataset([_record(image)], crop_size=16, train=True)

    def draws(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [ds[0] for _ in range(5)]

    first, again, other = draws(7), draws(7), draws(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_dataloader_workers_do_not_repeat_each_other():
    image = np.random.default_rng(0).integers(0, 4096, size=(96, 96)).astype(np.uint16)
    ds = SliceDataset([_record(image)] * 8, crop_size=16, train=True)
    torch.manual_seed(0)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))  # worker 0: batch 0, worker 1: batch 1
    assert not torch.equal(batches[0], batches[1])


def test_small_slices_are_padded_or_skipped():
    small = np.full((20, 30), 500, np.uint16)
    small[5:15, 5:25] = 1500
    big = np.random.default_rng(2).integers(0, 100, size=(40, 40)).astype(np.uint16)
    padded = SliceDataset([_record(small), _record(big)], crop_size=32, small="pad")
    assert len(padded) == 2
    x = padded[0][0]
    assert x.shape == (32, 32)
    assert float(x[:6].max()) == 0.0 and float(x[:, :1].max()) == 0.0  # padding is the slice minimum
    assert float(x.max()) == 1.0 and int((x == 1.0).sum()) == 10 * 20
    skipped = SliceDataset([_record(small), _record(big)], crop_size=32, small="skip")
    assert len(skipped) == 1 and skipped.records[0].pixels.shape == (40, 40)


def test_values_beyond_int16_stay_uint16():
    image = np.array([[0, 65535], [40000, 3]], dtype=np.uint16)
    ds = SliceDataset([_record(image)], crop_size=2)
    assert ds.records[0].pixels.dtype == np.uint16
    assert torch.equal(ds[0][0], torch.from_numpy(normalize(image, 0, 65535)))


# --- splits ----------------------------------------------------------------------------------


def test_patient_split_is_deterministic_and_roughly_proportional():
    names = [f"patient-{i}" for i in range(2000)]
    splits = [patient_split(n, 0.1, 0.2, seed=0) for n in names]
    assert splits == [patient_split(n, 0.1, 0.2, seed=0) for n in names]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03
    assert splits != [patient_split(n, 0.1, 0.2, seed=1) for n in names]


def test_from_folder_splits_by_patient_subfolder(tmp_path):
    rng = np.random.default_rng(5)
    for p in range(12):
        folder = tmp_path / f"patient{p:02d}"
        folder.mkdir()
        for s in range(2):  # two files per patient: both must land in the same split
            mio.write_npy(rng.integers(0, 1000, size=(3, 40, 40)).astype(np.int16), folder / f"scan{s}.npy")
    (tmp_path / "README.txt").write_text("not an image")
    datasets = {split: SliceDataset.from_folder(tmp_path, split, val_fraction=0.25, test_fraction=0.25,
                                                crop_size=32) for split in ("train", "val", "test")}
    patients = {split: set(ds.patients) for split, ds in datasets.items()}
    assert set().union(*patients.values()) == {f"patient{p:02d}" for p in range(12)}
    assert sum(len(p) for p in patients.values()) == 12  # no patient in two splits
    for split, ds in datasets.items():
        assert len(ds) == 6 * len(patients[split])
        assert all(patient_split(p, 0.25, 0.25, 0) == split for p in patients[split])
    assert datasets["train"].train and not datasets["val"].train


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"sample corpus not found at {CORPUS}")
def test_from_folder_uses_patient_id_for_loose_dicom_files(tmp_path):
    for name in ("693_UNCR.dcm", "bad_sequence.dcm"):
        shutil.copy(CORPUS / "ct/pydicom-data" / name, tmp_path / name)
    everything = SliceDataset.from_folder(tmp_path, "train", val_fraction=0, test_fraction=0, crop_size=64)
    ids = {str(mio.read(tmp_path / n).datasets[0].PatientID) for n in ("693_UNCR.dcm", "bad_sequence.dcm")}
    assert set(everything.patients) == ids and len(everything) == 2


def test_manifest_with_a_patient_in_two_splits_is_refused(tmp_path):
    mio.write_npy(np.zeros((2, 8, 8), np.int16), tmp_path / "a.npy")
    mio.write_npy(np.ones((2, 8, 8), np.int16), tmp_path / "b.npy")
    manifest = tmp_path / "MANIFEST.csv"
    manifest.write_text("path,modality,patient,split\na.npy,CT,p1,train\nb.npy,CT,p1,test\n")
    with pytest.raises(InputError, match="patient p1 is in both train and test"):
        read_manifest(manifest)
    manifest.write_text("path,modality,patient,split\na.npy,CT,p1,train\nb.npy,CT,p2,test\n")
    assert [r.patient for r in read_manifest(manifest)] == ["p1", "p2"]
    assert len(SliceDataset.from_manifest(manifest, "test", crop_size=8)) == 2
