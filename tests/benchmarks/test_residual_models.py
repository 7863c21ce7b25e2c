"""benchmarks/residual_models.py: real bytes per bound, and a broken bound stops the comparison."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae.io.slices import Slice
from tests.conftest import benchmark_module, small_residual


@pytest.fixture(scope="module")
def measure():
    return benchmark_module("residual_models").measure


@pytest.fixture()
def codec(ct_like):
    codec = medvae.load("medvae", quality=1)
    codec.residual = small_residual(codec, ct_like)
    return codec


def test_measure_gives_the_files_bytes_per_bound(measure, codec, ct_like):
    image = Slice(pixels=ct_like, bits_stored=16, modality="CT", file="phantom")
    bpp, encode, decode = measure(codec, [image, image], [0, 4])
    expected = {t: 8 * len(codec.compress(ct_like, max_error=t)) / ct_like.size for t in (0, 4)}
    assert bpp == pytest.approx(expected, rel=0, abs=1e-12)
    assert bpp[0] > bpp[4] and encode > 0 and decode > 0


def test_a_decoded_error_above_the_bound_stops_the_comparison(measure, codec, ct_like, monkeypatch):
    decompress = codec.decompress
    monkeypatch.setattr(codec, "decompress", lambda data: np.clip(decompress(data).astype(int) + 3, -32768, 32767).astype(np.int16))
    with pytest.raises(SystemExit, match="above the bound 2"):
        measure(codec, [Slice(pixels=ct_like, bits_stored=16, modality="CT", file="phantom")], [2])
