"""benchmarks/lossy_weights.py: rows from real files, and a per-image BD-rate per modality."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae.io.slices import Slice
from tests.conftest import benchmark_module, small_model


@pytest.fixture(scope="module")
def lossy_weights():
    return benchmark_module("lossy_weights")


def test_measure_gives_each_files_bytes_and_psnr(lossy_weights, ct_like):
    codec = medvae.Codec(small_model("medvae-ctx"))
    image = Slice(pixels=ct_like, patient="p", modality="CT", bits_stored=16)
    rows = lossy_weights.measure(codec, [image], "small", qualities=(2.0, 6.0))
    assert [(r["codec"], r["point"]) for r in rows] == [("small", "small[model=q2]"), ("small", "small[model=q6]")]
    data = codec.compress(ct_like, quality=6.0, bits_stored=16)
    assert rows[1]["bpp"] == pytest.approx(8 * len(data) / ct_like.size, rel=1e-9)
    assert rows[1]["psnr"] == pytest.approx(medvae.metrics.psnr(ct_like, codec.decompress(data), 16), rel=1e-9)


def _curve(label, modality, index, scale):
    rates = np.array([0.1, 0.2, 0.4, 0.8])
    return [{"codec": label, "file": f"{modality}-{index}", "slice": 0, "modality": modality,
             "bpp": float(r * scale), "psnr": float(40 + 6 * np.log2(r / 0.1))} for r in rates]


def test_bd_rates_are_per_image_and_per_modality(lossy_weights):
    rows = _curve("ref", "CT", 0, 1.0) + _curve("new", "CT", 0, 0.9) + _curve("ref", "MR", 1, 1.0) + _curve("new", "MR", 1, 1.2)
    table = lossy_weights.bd_rates(rows, "ref", "new", low=0.0, high=10.0)
    assert table["CT"][0] == pytest.approx(-10.0, abs=0.01) and table["CT"][1] == 1
    assert table["MR"][0] == pytest.approx(20.0, abs=0.01)
    far = lossy_weights.bd_rates(rows, "ref", "new", low=5.0, high=10.0)  # no point in the band
    assert far["CT"][1] == 0 and np.isnan(far["CT"][0])
