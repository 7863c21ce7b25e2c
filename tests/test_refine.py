"""Encoder-side latent refinement: same decoder, a lower real rate–distortion cost, clear errors."""

from __future__ import annotations


import numpy as np
import pydicom
import pytest
import torch

import medvae
from medvae.checkpoint import load_model, save_model, trained_lmbda
from medvae.errors import InputError
from medvae.intensity import normalize
from medvae.losses import bits_per_pixel
from medvae.refine import quantized_forward, refine_latents
from tests.conftest import small_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ct_small() -> np.ndarray:
    """pydicom's 128×128 CT slice (int16 stored values)."""
    return pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).pixel_array


def real_cost(codec: medvae.Codec, image: np.ndarray, data: bytes, lmbda: float) -> float:
    """``bits/pixel + λ·255²·MSE`` from the real bytes and the decoded image (normalized as coded)."""
    lo, hi = medvae.read_header(data).value_range
    decoded = medvae.Codec(load_model_like(codec)).decompress(data)  # a separate decoder: bytes only
    mse = float(np.mean((normalize(decoded, lo, hi) - normalize(image, lo, hi)) ** 2))
    return 8 * len(data) / image.size + lmbda * 255**2 * mse


def load_model_like(codec: medvae.Codec):
    """A fresh copy of the codec's model, so decoding shares no state with encoding."""
    copy = medvae.models.create(codec.model.model_name, **codec.model.config)
    copy.load_state_dict(codec.model.state_dict())
    copy.exact_plan = dict(codec.model.exact_plan)  # part of the weights for coding
    return copy


@pytest.mark.parametrize("family", ["bls2017", "balle2018", "bls-residual", "medvae", "shipped q3"])
def test_quantized_forward_is_what_the_decoder_gives(family, ct_like):
    # The shipped weights have bottleneck medians far from 0 (untrained ones sit at 0), so
    # rounding z around the medians, as the coder does, is checked too.
    codec = medvae.load("medvae", quality=3) if family == "shipped q3" else medvae.Codec(small_model(family))
    x = codec._prepare(ct_like, None)[2].tensor().float()
    with torch.no_grad():
        latents = codec.model.analyze(x)
        out = quantized_forward(codec.model, latents)
        x_hat, bits = out["x_hat"], bits_per_pixel(out["likelihoods"], 1)
        coded = codec.model.compress_latents(latents)
        decoded = codec.model.decompress(coded["strings"], coded["shape"])["x_hat"]
    torch.testing.assert_close(x_hat, decoded, atol=1e-5, rtol=0)
    real_bits = 8 * sum(len(s[0]) for s in coded["strings"])
    # rANS adds a few bytes per string, and the Gaussian coder uses a discrete table of scales.
    assert abs(real_bits - bits.item()) <= 0.15 * bits.item() + 96


def test_refinement_lowers_the_real_cost_with_shipped_weights(ct_small):
    codec = medvae.load("medvae", quality=3)
    plain = codec.compress(ct_small)
    refined = codec.compress(ct_small, refine_steps=20)
    assert refined != plain
    restored = medvae.decompress(refined)  # the shipped decoder, found from the header alone
    assert restored.shape == ct_small.shape and restored.dtype == ct_small.dtype
    before, after = real_cost(codec, ct_small, plain, codec.lmbda), real_cost(codec, ct_small, refined, codec.lmbda)
    assert after < 0.985 * before, (before, after)  # about 4 % lower here


def test_a_larger_lambda_buys_fidelity_with_bits(ct_small):
    codec = medvae.load("medvae", quality=3)
    low = codec.compress(ct_small, refine_steps=20)
    high = codec.compress(ct_small, refine_steps=20, lmbda=10 * codec.lmbda)
    error = [np.abs(medvae.decompress(d).astype(float) - ct_small).mean() for d in (low, high)]
    assert len(high) > len(low) and error[1] < error[0]


def test_bytes_do_not_depend_on_the_callers_threads_or_grad_mode(ct_small):
    codec = medvae.load("medvae", quality=2)
    expected = codec.compress(ct_small, refine_steps=5)
    torch.set_num_threads(2)
    assert codec.compress(ct_small, refine_steps=5) == expected
    with torch.inference_mode():
        assert codec.compress(ct_small, refine_steps=5) == expected
    with torch.no_grad():
        assert codec.compress(ct_small, refine_steps=5) == expected


def test_zero_steps_are_the_encoders_own_latents(ct_like):
    model = small_model("medvae")
    x = torch.from_numpy(normalize(ct_like[:64, :64], int(ct_like.min()), int(ct_like.max())))[None, None]
    with torch.no_grad():
        expected = model.analyze(x)
    for got, want in zip(refine_latents(model, x, 0.1, steps=0), expected):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_lambda_comes_from_the_weights_or_the_caller(tmp_path, ct_like):
    assert medvae.load("medvae", quality=1).lmbda == pytest.approx(0.003)  # the weights index
    untrained = medvae.Codec(small_model("balle2018"))
    assert untrained.lmbda is None
    with pytest.raises(InputError, match="lambda"):
        untrained.compress(ct_like, refine_steps=2)
    data = untrained.compress(ct_like, refine_steps=2, lmbda=0.05)
    assert untrained.decompress(data).shape == ct_like.shape
    for steps, lmbda in [(-1, 0.05), (1.5, 0.05), (2, -1.0), (0, 0.0)]:
        with pytest.raises(InputError, match="whole number|lambda > 0"):
            untrained.compress(ct_like, refine_steps=steps, lmbda=lmbda)

    path = tmp_path / "trained.pt"
    save_model(small_model("medvae"), path, config={"loss": {"lmbda": 0.05, "distortion": "mse"}})
    assert medvae.load(path).lmbda == 0.05
    assert trained_lmbda({"config": {"loss": {"lmbda": 5.0, "distortion": "ms-ssim"}}}) is None
    assert load_model(path).trained_lmbda == 0.05
