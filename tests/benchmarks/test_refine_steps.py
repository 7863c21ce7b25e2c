"""benchmarks/refine_steps.py: its rows are the real codec's, per slice, quality and step count."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from medvae import bitstream
from medvae.io.slices import Slice
from medvae.metrics import psnr
from tests.conftest import benchmark_module


@pytest.fixture(scope="module")
def refine_steps():
    return benchmark_module("refine_steps")


def test_measure_gives_each_slice_s_real_bytes_under_its_step_count(refine_steps, ct_like):
    codec = medvae.load("medvae", quality=2)
    images = [Slice(ct_like, 12), Slice(np.flipud(ct_like).copy(), 12)]
    rows = refine_steps.measure(codec, images, 0)
    data = [codec.compress(im.pixels, bits_stored=12) for im in images]
    assert [r["codec"] for r in rows] == ["0 steps"] * 2
    assert [r["bpp"] for r in rows] == pytest.approx([8 * len(d) / ct_like.size for d in data])
    assert [r["psnr"] for r in rows] == pytest.approx([psnr(im.pixels, codec.decompress(d), 12) for im, d in zip(images, data)])
    refined = refine_steps.measure(codec, images, 3)
    assert [r["codec"] for r in refined] == ["3 steps"] * 2
    assert [(r["bpp"], r["psnr"]) for r in refined] != [(r["bpp"], r["psnr"]) for r in rows] and refined[0]["encode_s"] > 0


def test_a_variable_rate_model_is_measured_at_the_quality_asked(refine_steps, ct_like):
    codec = medvae.load("medvae-ctx")
    (row,) = refine_steps.measure(codec, [Slice(ct_like, 12)], 0, quality=2.5)
    data = codec.compress(ct_like, bits_stored=12, quality=2.5)
    assert bitstream.read_header(data).quality == 2.5 and row["bpp"] == pytest.approx(8 * len(data) / ct_like.size)
