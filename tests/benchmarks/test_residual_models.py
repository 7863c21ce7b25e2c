"""benchmarks/residual_models.py: real bytes per bound, and a broken bound stops the comparison."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import medvae
from tests.conftest import benchmark_module, small_residual


@pytest.fixture(scope="module")
def measure():
    return benchmark_module("residual_models").measure


@pytest.fixture(scope="module")
def codec(phantom):
    codec = medvae.load("medvae", quality=1)
    codec.residual = small_residual(codec, phantom)
    return codec


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :56]
    return (1000 + 300 * np.sin(xx / 6) * np.cos(yy / 5) + rng.normal(0, 20, xx.shape)).astype(np.int16)


def test_measure_gives_the_files_bytes_per_bound(measure, codec, phantom):
    image = SimpleNamespace(name="phantom", pixels=phantom)
    bpp, encode, decode = measure(codec, [image, image], [0, 4])
    expected = {t: 8 * len(codec.compress(phantom, max_error=t)) / phantom.size for t in (0, 4)}
    assert bpp == pytest.approx(expected, rel=0, abs=1e-12)
    assert bpp[0] > bpp[4] and encode > 0 and decode > 0


def test_a_decoded_error_above_the_bound_stops_the_comparison(measure, codec, phantom, monkeypatch):
    decompress = codec.decompress
    monkeypatch.setattr(codec, "decompress", lambda data: decompress(data) + 3)
    with pytest.raises(SystemExit, match="above the bound 2"):
        measure(codec, [SimpleNamespace(name="phantom", pixels=phantom)], [2])
