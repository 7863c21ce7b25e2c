"""tools/ship_residual.py: a new residual model replaces the shipped one, and files written with
the one it replaces still decode."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import zoo
from medvae.checkpoint import save_model
from medvae.residual.weights import Residual, save_residual
from tests.conftest import small_model, small_residual
from tools.export_weights import export
from tools.ship_residual import ship_residual


def test_a_shipped_residual_model_replaces_the_last_and_keeps_its_files_decodable(weights_dir, tmp_path, ct_like):
    save_model(small_model("medvae"), tmp_path / "q1.pt")
    export(tmp_path / "q1.pt", 1, weights_dir=weights_dir)
    base = medvae.load("medvae")
    paths = []
    for seed in (3, 4):
        residual = small_residual(base, ct_like, seed)
        paths.append(tmp_path / f"residual-{seed}.pt")
        save_residual(Residual(residual.model, residual.plan, {"base_fingerprint": base.fingerprint, "steps": 7}), paths[-1])

    files = []
    for path in paths:
        shipped = ship_residual(path, "medvae", notes={"budget": "a test"})
        assert shipped.parent == weights_dir
        files.append(medvae.compress(ct_like, max_error=0))
    first, second = (medvae.read_header(f).residual_fingerprint for f in files)
    record = zoo.index()["medvae"]["qualities"]["1"]
    assert first != second == record["residual"]["fingerprint"] and record["residual"]["budget"] == "a test"
    assert [r["fingerprint"] for r in record["previous_residuals"]] == [first]
    for data in files:  # the first file needs the model kept in previous_residuals
        np.testing.assert_array_equal(medvae.decompress(data), ct_like)

    with pytest.raises(medvae.MedVAEError, match="shipped already"):
        ship_residual(paths[1], "medvae")
    other = tmp_path / "other-base.pt"
    save_residual(Residual(residual.model, residual.plan, {"base_fingerprint": "0" * 16}), other)
    with pytest.raises(medvae.MedVAEError, match="trained on base 0000000000000000"):
        ship_residual(other, "medvae")

    # Exporting the base again (a new note) keeps its residual models; other weights there are refused.
    export(tmp_path / "q1.pt", 1, weights_dir=weights_dir, notes={"budget": "again"})
    assert zoo.index()["medvae"]["qualities"]["1"]["residual"]["fingerprint"] == second
    np.testing.assert_array_equal(medvae.decompress(files[0]), ct_like)
    save_model(small_model("medvae", seed=9), tmp_path / "other-q1.pt")
    with pytest.raises(ValueError, match="base of shipped residual models"):
        export(tmp_path / "other-q1.pt", 1, weights_dir=weights_dir)
    assert zoo.shipped_fingerprint(weights_dir / "medvae-q1.pt") == base.fingerprint
    np.testing.assert_array_equal(medvae.decompress(files[1]), ct_like)


def test_a_series_model_ships_as_the_series_residual_and_survives_a_new_export(weights_dir, tmp_path, ct_like):
    from tests.conftest import small_series_residual

    save_model(small_model("medvae"), tmp_path / "q1.pt")
    export(tmp_path / "q1.pt", 1, weights_dir=weights_dir)
    base = medvae.load("medvae")
    series = small_series_residual(base, ct_like, ct_like)
    save_residual(Residual(series.model, series.plan, {"base_fingerprint": base.fingerprint}), tmp_path / "series.pt")
    shipped = ship_residual(tmp_path / "series.pt", "medvae")
    assert "-series-" in shipped.name
    export(tmp_path / "q1.pt", 1, weights_dir=weights_dir, notes={"budget": "again"})
    assert zoo.index()["medvae"]["qualities"]["1"]["series_residual"]["fingerprint"] == series.fingerprint
    codec = medvae.load("medvae")
    assert codec.series_residual.fingerprint == series.fingerprint and codec.residual is None
    with pytest.raises(medvae.MedVAEError, match="shipped already"):
        ship_residual(tmp_path / "series.pt", "medvae")
