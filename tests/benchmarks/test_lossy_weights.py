"""benchmarks/lossy_weights.py: rows from real files, and a per-image BD-rate per modality."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import medvae
from tests.conftest import benchmark_module, small_model


@pytest.fixture(scope="module")
def lossy_weights():
    return benchmark_module("lossy_weights")


def test_measure_gives_each_files_bytes_and_psnr(lossy_weights, ct_like):
    codec = medvae.Codec(small_model("medvae-ctx"))
    image = SimpleNamespace(pixels=ct_like, bits_stored=16, modality="CT")
    rows = lossy_weights.measure(codec, [image], "small", qualities=(2.0, 6.0))
    assert [r["quality"] for r in rows] == [2.0, 6.0]
    data = codec.compress(ct_like, quality=6.0, bits_stored=16)
    assert rows[1]["bpp"] == 8 * len(data) / ct_like.size
    assert rows[1]["psnr"] == medvae.metrics.psnr(ct_like, codec.decompress(data), 16)


def _curve(label, modality, index, scale):
    rates = np.array([0.1, 0.2, 0.4, 0.8])
    return [{"codec": label, "file": f"{modality}-{index}", "slice": 0, "modality": modality,
             "bpp": float(r * scale), "psnr": float(40 + 6 * np.log2(r / 0.1))} for r in rates]


def test_bd_rates_are_per_image_and_per_modality(lossy_weights):
    rows = _curve("ref", "CT", 0, 1.0) + _curve("new", "CT", 0, 0.9) + _curve("ref", "MR", 1, 1.0) + _curve("new", "MR", 1, 1.2)
    table = lossy_weights.bd_rates(rows, "ref", "new", low=0.0, high=10.0)
    assert table["CT"][0] == pytest.approx(-10.0, abs=0.01) and table["CT"][1] == 1
    assert table["MR"][0] == pytest.approx(20.0, abs=0.01)
