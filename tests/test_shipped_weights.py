"""The weights shipped inside the package: complete, within budget, ordered by rate, bit-exact."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medvae
from medvae import metrics, zoo
from medvae.checkpoint import exact_fingerprint, fingerprint, load_model
from medvae.cli.info import describe, format_text
from tests.conftest import REPO

#: Issue 18: the weights MedVAE ships, all of them, within 20 MB (the old ladder's other six
#: qualities are the optional package medvae-ladder, for decoding files written with them).
MAX_TOTAL_BYTES = 20_000_000
needs_ladder = pytest.mark.skipif(
    "medvae_ladder" not in {p.parent.name for p in zoo.weights_dirs()[1:]},
    reason="the optional package medvae-ladder is not installed (pip install -e packages/medvae-ladder)",
)


@pytest.fixture(scope="module")
def ct_slice() -> np.ndarray:
    """pydicom's 128×128 16-bit CT test slice."""
    return pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array


def test_the_package_ships_its_weights_within_budget():
    files = sorted(zoo.WEIGHTS_DIR.glob("*.pt"))
    default = zoo.index()["medvae"]["qualities"]["5"]
    residual, series = default["residual"]["file"], default["series_residual"]["file"]
    alternatives = {record["file"] for record in zoo.index()["medvae-ctx"]["alternatives"]}
    assert len(alternatives) == 1 and {"medvae-ctx.pt", "medvae-q5.pt", residual, series, *alternatives} <= {f.name for f in files}
    assert sum(f.stat().st_size for f in files) <= MAX_TOTAL_BYTES
    codec = medvae.load("medvae")  # the default base comes with both residual models, each as the index records it
    assert codec.residual.fingerprint == default["residual"]["fingerprint"]
    assert codec.series_residual.model.previous and codec.series_residual.fingerprint == default["series_residual"]["fingerprint"]
    assert codec.series_residual.info["base_fingerprint"] == codec.fingerprint


@needs_ladder
def test_index_lists_seven_medvae_qualities_with_the_ladder_package():
    qualities = zoo.qualities("medvae")
    assert qualities == [1, 2, 3, 4, 5, 6, 7]
    entry = zoo.index()["medvae"]
    assert entry["default_quality"] in qualities
    files = [zoo.shipped_path("medvae", q) for q in qualities]
    assert all(f.is_file() for f in files)
    assert set(entry["optional"]["qualities"]) == set(qualities) - {entry["default_quality"]}
    for q in qualities:
        record = entry["qualities"][str(q)]
        assert record.get("command"), f"q{q} does not record how it was trained"
        # the fingerprint a bitstream names is the one of the weights as users load them, with
        # the exact plan stored in the file; files of format 1 name the float weights alone
        model = load_model(zoo.shipped_path("medvae", q))
        assert model.exact_plan, f"q{q} has no exact plan"
        assert exact_fingerprint(model, model.exact_plan) == record["fingerprint"]
        assert fingerprint(model) == record["format1_fingerprint"]
        assert record["exact"]["command"].startswith("python benchmarks/convert_exact.py")


def test_without_the_ladder_package_its_qualities_and_files_name_it(ct_slice, monkeypatch):
    """The default install has the ladder's quality 5 only; a file of another quality, or
    asking for one, says which package to install."""
    monkeypatch.setattr(zoo, "OPTIONAL_WEIGHTS", {})
    zoo.index.cache_clear()
    try:
        assert zoo.qualities("medvae") == [zoo.index()["medvae"]["default_quality"]] == [5]
        with pytest.raises(medvae.MedVAEError, match="pip install medvae-ladder"):
            medvae.load("medvae", quality=3)
        old = REPO / "tests/data/golden/medvae-q3.mvae"
        with pytest.raises(medvae.BitstreamError, match="come with the optional package medvae-ladder"):
            medvae.decompress(old.read_bytes())
        assert "optional package medvae-ladder, not installed" in format_text(describe(old))
        data = medvae.compress(ct_slice, model="medvae", max_error=0)  # lossless needs nothing optional
        np.testing.assert_array_equal(medvae.decompress(data), ct_slice)
        assert zoo.is_variable_rate("medvae-vr")  # the superseded variable-rate model is the package's too
        with pytest.raises(medvae.MedVAEError, match="'medvae-vr' comes with the optional package medvae-ladder"):
            medvae.load("medvae-vr")
    finally:
        zoo.index.cache_clear()


@needs_ladder
def test_higher_quality_costs_more_bytes_and_gives_less_error(ct_slice):
    sizes, errors = [], []
    for q in zoo.qualities("medvae"):
        data = medvae.load("medvae", quality=q).compress(ct_slice)
        restored = medvae.decompress(data)  # weights found by the header's fingerprint
        assert restored.shape == ct_slice.shape and restored.dtype == ct_slice.dtype
        sizes.append(len(data))
        errors.append(metrics.mse(ct_slice, restored))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert errors == sorted(errors, reverse=True)


def test_default_quality_is_what_compress_uses(ct_slice):
    entry = zoo.index()[zoo.DEFAULT_MODEL]  # medvae-ctx: one file for every quality, and an alternative
    header = medvae.read_header(medvae.compress(ct_slice))
    assert (header.model, header.quality) == ("medvae-ctx", entry["default_quality"])
    assert header.fingerprint in {record["fingerprint"] for record in [entry["weights"], *entry["alternatives"]]}
    assert medvae.compress(ct_slice) == medvae.compress(ct_slice, quality=entry["default_quality"])
    ladder = zoo.index()["medvae"]["default_quality"]  # the ladder, by name
    assert medvae.read_header(medvae.compress(ct_slice, model="medvae")).fingerprint == zoo.index()["medvae"]["qualities"][str(ladder)]["fingerprint"]


@needs_ladder
def test_the_superseded_variable_rate_model_codes_from_the_ladder_package(ct_slice):
    assert zoo.shipped_path("medvae-vr").parent != zoo.WEIGHTS_DIR
    assert medvae.read_header(medvae.compress(ct_slice, model="medvae-vr")).quality == zoo.index()["medvae-vr"]["default_quality"]


@pytest.mark.parametrize("family, config", [
    pytest.param("medvae-vr", "corpus-cpu-medvae-vr", marks=needs_ladder),
    ("medvae-ctx", "corpus-cpu-medvae-ctx"),
    ("medvae-ctx alternative", "corpus-cpu-medvae-ctx-256-xr"),
])
def test_the_variable_rate_weights_record_their_training_and_plan(family, config):
    name, _, alternative = family.partition(" ")
    entry = zoo.index()[name]
    record = entry["alternatives"][0] if alternative else entry["weights"]
    model = load_model(record["path"])
    assert model.exact_plan and exact_fingerprint(model, model.exact_plan) == record["fingerprint"]
    assert record["command"].startswith(f"python train.py --config configs/{config}.yaml")
    assert record["exact"]["command"] == f"python benchmarks/ship.py {name}"
