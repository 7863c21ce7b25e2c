"""benchmarks/refine_steps.py: the means it prints are the real codec's, per quality and step count."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae.io.slices import Slice
from medvae.metrics import psnr
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def refine_steps():
    return benchmark_module("refine_steps")


def test_measure_is_the_mean_over_real_bytes(refine_steps, ct_like):
    codec = medvae.load("medvae", quality=2)
    images = [Slice(ct_like, 12), Slice(np.flipud(ct_like).copy(), 12)]
    bpp, quality_db, seconds = refine_steps.measure(codec, images, 0)
    data = [codec.compress(im.pixels, bits_stored=12) for im in images]
    assert bpp == pytest.approx(np.mean([8 * len(d) / ct_like.size for d in data]))
    assert quality_db == pytest.approx(np.mean([psnr(im.pixels, codec.decompress(d), 12) for im, d in zip(images, data)]))
    refined = refine_steps.measure(codec, images, 3)
    assert refined[:2] != (bpp, quality_db) and refined[2] > 0 and seconds > 0
