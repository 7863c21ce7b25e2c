"""Shipped weights: export a checkpoint, load it by name and quality, decode without naming it."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import zoo
from medvae.checkpoint import save_model
from tests.conftest import small_model
from tools.export_weights import export


def test_exported_weights_load_by_name_and_decode_by_fingerprint(weights_dir, tmp_path, ct_like):
    for quality, seed in ((1, 0), (2, 1)):
        save_model(small_model("medvae", seed=seed), tmp_path / f"q{quality}.pt")
        export(tmp_path / f"q{quality}.pt", quality, notes={"command": "python train.py ..."}, weights_dir=weights_dir)
    assert zoo.qualities("medvae") == [1, 2]
    assert zoo.index()["medvae"]["default_quality"] == 1
    assert zoo.index()["medvae"]["qualities"]["2"]["command"] == "python train.py ..."

    q2 = medvae.load("medvae", quality=2)
    data = medvae.compress(ct_like, quality=2)
    assert data == q2.compress(ct_like)
    # No model named: the header's fingerprint finds the shipped q2 weights.
    np.testing.assert_array_equal(medvae.decompress(data), q2.reconstruct(ct_like)[0])
    assert medvae.read_header(medvae.compress(ct_like)).fingerprint == medvae.load("medvae").fingerprint


@pytest.mark.parametrize("family", ["medvae-vr", "medvae-ctx"])
def test_a_variable_rate_model_ships_as_one_file_for_every_quality(family, weights_dir, tmp_path, ct_like):
    save_model(small_model("medvae", seed=0), tmp_path / "ladder.pt")
    export(tmp_path / "ladder.pt", 1, weights_dir=weights_dir)
    save_model(small_model(family, seed=1), tmp_path / "vr.pt")
    path = export(tmp_path / "vr.pt", 5, notes={"command": "python train.py ..."}, weights_dir=weights_dir)
    assert path.name == f"{family}.pt" and zoo.is_variable_rate(family) and zoo.qualities(family) == []
    assert zoo.shipped_path(family, 2.5) == path and zoo.index()[family]["default_quality"] == 5
    data = medvae.compress(ct_like, 2.5, model=family)
    header = medvae.read_header(data)
    assert (header.model, header.quality) == (family, 2.5)
    np.testing.assert_array_equal(medvae.decompress(data), medvae.load(family).decompress(data))
    with pytest.raises(medvae.MedVAEError, match="has no quality 8: it codes any quality from 0 to 7"):
        medvae.load(family, quality=8)


def test_missing_quality_is_a_clear_error(weights_dir, tmp_path):
    save_model(small_model("medvae"), tmp_path / "m.pt")
    export(tmp_path / "m.pt", 1, weights_dir=weights_dir)
    with pytest.raises(medvae.MedVAEError, match="no quality 7; shipped qualities: \\[1\\]"):
        medvae.load("medvae", quality=7)


def test_new_variable_rate_weights_keep_the_files_of_the_old_in_the_optional_package(weights_dir, tmp_path, ct_like, monkeypatch):
    optional_dir = tmp_path / "optional"
    for name, seed in (("old", 1), ("new", 2)):
        save_model(small_model("medvae-vr", seed=seed), tmp_path / f"{name}.pt")
    export(tmp_path / "old.pt", 5, weights_dir=weights_dir, optional_dir=optional_dir)
    old_data = medvae.compress(ct_like, 2.5, model="medvae-vr")
    old_pixels = medvae.decompress(old_data)
    old_fingerprint = medvae.read_header(old_data).fingerprint

    path = export(tmp_path / "new.pt", 5, weights_dir=weights_dir, optional_dir=optional_dir)
    assert path == weights_dir / "medvae-vr.pt" and sorted(p.name for p in weights_dir.glob("*.pt")) == ["medvae-vr.pt"]
    new_data = medvae.compress(ct_like, 2.5, model="medvae-vr")
    assert medvae.read_header(new_data).fingerprint != old_fingerprint
    np.testing.assert_array_equal(medvae.decompress(new_data), medvae.load("medvae-vr").decompress(new_data))  # no stale codec
    assert zoo.index()["medvae-vr"]["optional"] == {"package": "medvae-ladder", "fingerprints": [old_fingerprint]}
    # Without the optional package the old file names it; with it, it decodes as before.
    with pytest.raises(medvae.BitstreamError, match="come with the optional package medvae-ladder"):
        medvae.decompress(old_data)
    monkeypatch.setattr(zoo, "weights_dirs", lambda: [weights_dir, optional_dir])
    zoo.index.cache_clear()
    assert (optional_dir / f"medvae-vr-{old_fingerprint[:8]}.pt").is_file()
    np.testing.assert_array_equal(medvae.decompress(old_data), old_pixels)
    assert zoo.shipped_path("medvae-vr") == path  # the package's defaults stay the new weights'
