"""tools/slab_volumes.py: overlapping-slab copies of the training CT volumes, listed beside the originals."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medvae.io.slices import manifest_slices
from tools.slab_volumes import add_slabs, slabs


def test_a_slab_is_the_rounded_mean_of_consecutive_slices():
    volume = np.array([[[0]], [[3]], [[4]], [[-7]]], np.int16)
    assert slabs(volume, 2)[:, 0, 0].tolist() == [2, 4, -2]  # 1.5 -> 2, 3.5 -> 4, -1.5 -> -2 (halves to even)
    assert slabs(volume, 3)[:, 0, 0].tolist() == [2, 0]
    assert slabs(volume, 2).dtype == np.int16
    with pytest.raises(ValueError):
        slabs(volume, 1)


def test_slabs_every_stride_slices_share_width_minus_stride_of_them():
    volume = np.arange(9, dtype=np.int16).reshape(9, 1, 1) * 4  # 0, 4, ..., 32
    assert slabs(volume, 3, 2)[:, 0, 0].tolist() == [4, 12, 20, 28]  # slices 0-2, 2-4, 4-6, 6-8
    assert slabs(volume[:8], 3, 2)[:, 0, 0].tolist() == [4, 12, 20]  # a last slab short of slices is left out
    for stride in (0, 3):
        with pytest.raises(ValueError, match="stride"):
            slabs(volume, 3, stride)


def test_slab_volumes_join_the_training_split_of_their_patient(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, (5, 16, 12)).astype(np.int16)
    np.save(tmp_path / "vol.npy", volume)
    np.save(tmp_path / "test.npy", volume)
    np.save(tmp_path / "mr.npy", volume)
    rows = [("vol.npy", "CT", "p", "train"), ("test.npy", "CT", "q", "test"), ("mr.npy", "MR", "r", "train")]
    with open(tmp_path / "MANIFEST.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "modality", "patient", "split", "source", "note"])
        writer.writerows([(*row, "", "") for row in rows])
    added = add_slabs(tmp_path / "MANIFEST.csv", tmp_path / "MANIFEST-slab2.csv")
    assert [(r["path"], r["patient"], r["split"]) for r in added] == [("slab2/p/vol.npy", "p", "train")]  # not the test or MR volume
    slices = manifest_slices(tmp_path / "MANIFEST-slab2.csv", split="train")
    assert len(slices) == 5 + 5 + 4  # the originals stay, then the slabs
    np.testing.assert_array_equal(np.stack([s.pixels for s in slices[10:]]), slabs(volume, 2))
    with pytest.raises(SystemExit, match="exists"):
        add_slabs(tmp_path / "MANIFEST.csv", tmp_path / "MANIFEST-slab2.csv")

    again = add_slabs(tmp_path / "MANIFEST-slab2.csv", tmp_path / "MANIFEST-slab3s2.csv", width=3, stride=2)
    assert [r["path"] for r in again] == ["slab3s2/p/vol.npy"]  # the slab2 volume is not slabbed again
    slices = manifest_slices(tmp_path / "MANIFEST-slab3s2.csv", split="train")
    assert len(slices) == 5 + 5 + 4 + 2
    np.testing.assert_array_equal(np.stack([s.pixels for s in slices[14:]]), slabs(volume, 3, 2))
