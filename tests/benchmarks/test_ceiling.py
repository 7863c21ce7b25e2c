"""benchmarks/ceiling.py: its step-1 pass is the real codec's (in float), finer steps cost more bits."""

from __future__ import annotations

import numpy as np
import pytest

import medvae
from tests.conftest import benchmark_module, small_model


@pytest.fixture(scope="module")
def ceiling():
    return benchmark_module("ceiling")


@pytest.mark.parametrize("family", ["balle2018", "medvae"])
def test_step_one_is_what_the_codec_decodes(ceiling, ct_like, family):
    codec = medvae.Codec(small_model(family))
    decoded, bpp = ceiling.code_at_step(codec, ct_like, 1.0)
    expected, expected_bpp = codec.reconstruct(ct_like)
    np.testing.assert_array_equal(expected, codec.decompress(codec.compress(ct_like)))
    # The float model differs from the exact codec in the last bits only: a step in a few pixels.
    assert np.mean(decoded != expected) < 0.01 and np.abs(decoded.astype(int) - expected).max() <= 2
    assert bpp == pytest.approx(expected_bpp, rel=1e-5)


def test_finer_steps_cost_more_bits_and_none_has_no_rate(ceiling, ct_like):
    codec = medvae.Codec(small_model("medvae"))
    rates = [ceiling.code_at_step(codec, ct_like, step)[1] for step in (1.0, 0.5, 0.25)]
    assert rates[0] < rates[1] < rates[2]
    unquantized, rate = ceiling.code_at_step(codec, ct_like, 0.0)
    assert np.isnan(rate)
    assert unquantized.shape == ct_like.shape and unquantized.dtype == ct_like.dtype


def test_a_finer_step_decodes_closer_to_the_unquantized_latent(ceiling, ct_like):
    codec = medvae.Codec(small_model("medvae"))
    unquantized = ceiling.code_at_step(codec, ct_like, 0.0)[0].astype(float)
    coarse, fine = (ceiling.code_at_step(codec, ct_like, step)[0].astype(float) for step in (1.0, 0.05))
    assert np.abs(fine - unquantized).mean() < 0.5 * np.abs(coarse - unquantized).mean()


def test_rejects_a_factorized_model(ceiling, tmp_path):
    from medvae.checkpoint import save_model

    path = tmp_path / "bls.pt"
    save_model(small_model("bls2017"), path)
    with pytest.raises(SystemExit, match="not a hyperprior model"):
        ceiling.main(["--qualities", "", "--checkpoint", str(path), "--steps", "1"])
