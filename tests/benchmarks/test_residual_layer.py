"""benchmarks/residual_layer.py: the two-layer codec really is learned base + classical residual."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae.evaluation.jpeg2000 import JPEG2000
from medvae.evaluation.jpegls import JPEGLS
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def layered():
    return benchmark_module("residual_layer").Layered


@pytest.fixture(scope="module")
def codec():
    return medvae.load("medvae", quality=1)


def test_lossless_residual_restores_the_image_exactly(layered, codec, ct_like):
    point = layered(codec, 1, JPEGLS(0))
    assert np.abs(codec.decompress(codec.compress(ct_like)).astype(int) - ct_like).max() > 0  # the base is lossy
    data = point.encode(ct_like, 12)
    np.testing.assert_array_equal(point.decode(data), ct_like)
    assert point.label == "medvae q1+jpegls[lossless]"


def test_near_lossless_residual_bounds_the_error_and_costs_both_layers(layered, codec, ct_like):
    data = layered(codec, 1, JPEGLS(2)).encode(ct_like, 12)
    decoded = layered(codec, 1, JPEGLS(2)).decode(data)
    assert decoded.dtype == ct_like.dtype
    assert np.abs(decoded.astype(int) - ct_like).max() <= 2
    assert len(data) > len(codec.compress(ct_like))


def test_jpeg2000_residual_improves_on_the_base(layered, codec, ct_like):
    point = layered(codec, 1, JPEG2000(1.0))
    base_error = np.abs(codec.decompress(codec.compress(ct_like)).astype(float) - ct_like).mean()
    layered_error = np.abs(point.decode(point.encode(ct_like, 12)).astype(float) - ct_like).mean()
    assert layered_error < base_error
