"""medvae.io.files: the one folder walker every folder argument goes through."""

from __future__ import annotations

import os

import numpy as np

from medvae.io.files import walk


def test_walk_skips_hidden_entries_and_symlinked_folders_and_sorts(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    for rel in ("z.dcm", "b/1.dcm", "a/deep/2.dcm", "a/.hidden.dcm", ".cache/3.dcm"):
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "link_to_a")  # would list a/ twice (and can loop)
    found = [p.relative_to(tmp_path).as_posix() for p in walk(tmp_path)]
    assert found == ["a/deep/2.dcm", "b/1.dcm", "z.dcm"]
    assert walk(tmp_path, keep=lambda p: p.name != "z.dcm")[-1].name == "1.dcm"


def test_evaluation_and_series_scans_use_the_same_rule(tmp_path):
    """The evaluation's folder reader once included hidden files; now every reader walks alike."""
    from medvae.evaluation.datasets import images_from_folder

    np.save(tmp_path / "a.npy", np.zeros((16, 16), np.uint16))
    np.save(tmp_path / ".a.npy", np.zeros((16, 16), np.uint16))  # e.g. an editor's or a sync tool's copy
    assert [image.file for image in images_from_folder(tmp_path)] == ["a.npy"]
