"""Golden bitstreams: what the shipped weights write and decode is pinned.

For each shipped quality, ``tests/data/golden/`` holds the ``.mvae`` the codec wrote for a
small CT-like slice and the SHA-256 of the pixels it decodes to. Coding is exact
(``docs/exact.md``), so these hold on every machine: a change that alters a single byte
written or a single pixel decoded fails here, and is made on purpose by regenerating:

    MEDVAE_REGENERATE_GOLDEN=1 pytest tests/test_golden.py

(as CompressAI pins the md5 sums of its bitstreams).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

import medvae
from medvae import bitstream, zoo
from tests.conftest import REPO

GOLDEN = REPO / "tests/data/golden"
REGENERATE = os.environ.get("MEDVAE_REGENERATE_GOLDEN") == "1"


def _source() -> np.ndarray:
    """The coded slice: 96×128 int16 HU (air, a body with noise, bone), committed as .npy."""
    path = GOLDEN / "source.npy"
    if REGENERATE and not path.exists():
        rng = np.random.default_rng(2026)
        yy, xx = np.mgrid[:96, :128]
        image = np.full((96, 128), -1000.0)
        body = (yy - 48) ** 2 / 40**2 + (xx - 64) ** 2 / 52**2 < 1
        image[body] = 40 + 25 * np.sin(xx[body] / 9.0) + rng.normal(0, 12, body.sum())
        image[(yy - 60) ** 2 + (xx - 70) ** 2 < 60] = 1250
        np.save(path, np.round(image).astype(np.int16))
    return np.load(path)


def _sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()).hexdigest()


def _record() -> dict:
    path = GOLDEN / "golden.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.parametrize("quality", range(1, 8))
def test_shipped_weights_write_and_decode_the_golden_bitstream(quality):
    if quality not in zoo.qualities("medvae"):
        pytest.skip(f"medvae quality {quality} is in the optional package medvae-ladder, not installed "
                    "(pip install -e packages/medvae-ladder)")
    source = _source()
    codec = medvae.load("medvae", quality)
    written = codec.compress(source, bits_stored=12)
    golden = GOLDEN / f"medvae-q{quality}.mvae"
    if REGENERATE:
        golden.write_bytes(written)
        record = _record()
        record[str(quality)] = {"fingerprint": codec.fingerprint, "mvae_sha256": hashlib.sha256(written).hexdigest(),
                                "pixels_sha256": _sha256(codec.decompress(written))}
        (GOLDEN / "golden.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    expected = _record()[str(quality)]
    assert hashlib.sha256(golden.read_bytes()).hexdigest() == expected["mvae_sha256"]  # the committed file is intact
    assert written == golden.read_bytes(), "the encoder now writes other bytes: regenerate on purpose (see module doc)"
    decoded = medvae.decompress(golden.read_bytes())  # finds the shipped weights by fingerprint
    assert _sha256(decoded) == expected["pixels_sha256"], "the golden file now decodes to other pixels"


def _previous() -> np.ndarray:
    """The slice before the golden one, for series coding: the same anatomy moved one pixel, and its own noise."""
    source = _source()
    rng = np.random.default_rng(2027)
    return np.roll(source, 1, axis=1) + rng.integers(-8, 9, source.shape).astype(np.int16)


def _earlier() -> np.ndarray:
    """The slice before :func:`_previous`: the anatomy moved two pixels, and its own noise."""
    source = _source()
    rng = np.random.default_rng(2028)
    return np.roll(source, 2, axis=1) + rng.integers(-8, 9, source.shape).astype(np.int16)


@pytest.mark.parametrize("label", [f"{adapted}{layer}" for adapted in ("", "adapted-")
                                   for layer in ("lossless", "near-lossless-2", "series-lossless", "series-near-lossless-2")]
                         + ["optimized-near-lossless-4", "optimized-series-near-lossless-4"]
                         + ["predicted-series-lossless", "predicted-series-near-lossless-2", "predicted-optimized-series-near-lossless-4"]
                         + ["stepped-lossless", "stepped-near-lossless-2", "stepped-optimized-near-lossless-4"])
def test_the_residual_models_write_and_decode_the_golden_bitstream(label):
    """The shipped residual model (format 8) and series residual model (format 10, given the two
    slices before), lossless and with max error 2; without the per-image adaptation of the laws
    (``adaptation=False``: formats 8 and 10, byte for byte what the releases before wrote) and with
    it (formats 15 and 17, :mod:`medvae.residual.adaptation`, with the passes' laws); rate control's
    optimized coding at quantizer bound 4 (formats 18 and 20); all these series files without the
    prediction of the base latent (``base_prediction=False``, as the release before wrote them), and
    with it and the series step of y, as the default codes series now (formats 24 and 26,
    :mod:`medvae.prediction`); the slices coded alone at the unit step of y (``noise_step=False``,
    as the release before wrote them), and at the step their noise calls for, as the default codes
    them now (formats 28 and 29)."""
    predicted, stepped = label.startswith("predicted-"), label.startswith("stepped-")
    kind = label.removeprefix("predicted-").removeprefix("stepped-")
    optimized = kind.startswith("optimized-")
    adapted = kind.startswith("adapted-") or optimized or predicted or stepped
    source, previous = _source(), [_previous(), _earlier()] if "series" in label else None
    codec = medvae.load("medvae", adaptation=adapted, base_prediction=predicted, noise_step=stepped)
    written = codec.compress(source, bits_stored=12, max_error=0 if label.endswith("lossless") else int(label[-1]), previous=previous,
                             optimize=optimized)
    golden = GOLDEN / f"medvae-{label}.mvae"
    fingerprint = (codec.series_residual if previous is not None else codec.residual).fingerprint
    if REGENERATE:
        golden.write_bytes(written)
        record = _record()
        record[label] = {"fingerprint": fingerprint, "mvae_sha256": hashlib.sha256(written).hexdigest(),
                         "pixels_sha256": _sha256(codec.decompress(written, previous))}
        (GOLDEN / "golden.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    expected = _record()[label]
    assert expected["fingerprint"] == fingerprint, "the shipped residual model changed: regenerate on purpose (see module doc)"
    assert hashlib.sha256(golden.read_bytes()).hexdigest() == expected["mvae_sha256"]
    assert written == golden.read_bytes(), "the encoder now writes other bytes: regenerate on purpose (see module doc)"
    version = medvae.read_header(written).version
    assert (version in medvae.bitstream.PREDICTED_VERSIONS, version in medvae.bitstream.STEPPED_VERSIONS) == (predicted, stepped)
    plain = medvae.bitstream.PREDICTED_VERSIONS.get(version, medvae.bitstream.STEPPED_VERSIONS.get(version, version))
    assert (plain in medvae.bitstream.LAW_VERSIONS, plain in medvae.bitstream.OPTIMIZED_VERSIONS) == (adapted and not optimized, optimized)
    assert _sha256(medvae.decompress(golden.read_bytes(), previous=previous)) == expected["pixels_sha256"]


@pytest.mark.parametrize("name", ["residual-401aee23-format8-lossless", "residual-401aee23-format8-near2",
                                  "series-674dbd07-format9-lossless", "series-674dbd07-format9-near2",
                                  "series-bf2dc46b-format9-lossless", "series-bf2dc46b-format9-near2",
                                  "series-a1bc748b-format17-lossless", "series-a1bc748b-format24-near2"])
def test_golden_files_of_the_residual_models_shipped_before_still_decode(name):
    """The golden files the residual models of the release before wrote (they name their model)
    decode to the pixels they decoded to then, now that other models code by default."""
    expected = json.loads((REPO / "tests/data/earlier-residual-models.json").read_text())[name]
    data = (REPO / f"tests/data/{name}.mvae").read_bytes()
    assert medvae.bitstream.read_header(data).residual_fingerprint == expected["fingerprint"]
    codec = medvae.load("medvae")
    assert expected["fingerprint"] not in (codec.residual.fingerprint, codec.series_residual.fingerprint)
    read = bitstream.layout(bitstream.read_header(data).version) - bitstream.BOUNDED_RESIDUAL_VERSION  # previous slices it reads
    previous = [_previous(), _earlier()][:read] or None
    assert _sha256(medvae.decompress(data, previous=previous)) == expected["pixels_sha256"]


@pytest.mark.parametrize("name", ["adapted-format12-lossless", "adapted-format12-near2",
                                  "adapted-format14-series-lossless", "adapted-format14-series-near2"])
def test_adapted_files_of_the_release_before_still_decode(name):
    """Formats 12 and 14 (an adaptation without the passes' laws: every pass Laplace), the golden
    files of the release before, decode to the pixels they decoded to then."""
    expected = json.loads((REPO / "tests/data/adapted-laplace-formats.json").read_text())[name]
    data = (REPO / f"tests/data/{name}.mvae").read_bytes()
    header = medvae.bitstream.read_header(data)
    assert (header.version, header.residual_fingerprint) == (expected["version"], expected["fingerprint"])
    previous = [_previous(), _earlier()] if "series" in name else None
    assert _sha256(medvae.decompress(data, previous=previous)) == expected["pixels_sha256"]


@pytest.mark.parametrize("name", ["unit-step-predicted-series-lossless", "unit-step-predicted-series-near-lossless-2",
                                  "unit-step-predicted-optimized-series-near-lossless-4", "stepped-predicted-series-lossless",
                                  "stepped-predicted-series-near-lossless-2", "stepped-predicted-optimized-series-near-lossless-4"])
def test_predicted_files_of_the_releases_before_still_decode(name):
    """Formats 24 and 26 as the releases before wrote them (the golden files of then: y at the unit
    step, a block without a step byte; then a coarser y, a step byte, and z coded alone, without
    its table's byte) decode to the pixels they decoded to then."""
    unit = name.startswith("unit-step")
    expected = json.loads((REPO / f"tests/data/{'unit-step' if unit else 'stepped'}-predicted.json").read_text())[name]
    data = (REPO / f"tests/data/{name}.mvae").read_bytes()
    header = medvae.bitstream.read_header(data)
    assert (header.version, header.residual_fingerprint, len(header.base_prediction)) == (
        expected["version"], expected["fingerprint"], expected["block_bytes"])
    assert (medvae.prediction.block_step(header.base_prediction) == medvae.prediction.UNIT_STEP) == unit
    assert medvae.prediction.block_hyper(header.base_prediction) is None
    assert _sha256(medvae.decompress(data, previous=[_previous(), _earlier()])) == expected["pixels_sha256"]
