"""Encoder-side latent refinement: same decoder, a lower real rate–distortion cost, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch

import medvae
from medvae.checkpoint import load_model, save_model, trained_lmbda
from medvae.cli import main
from medvae.errors import InputError
from medvae.intensity import normalize
from medvae.losses import bits_per_pixel
from medvae.refine import quantized_forward, refine_latents
from tests.conftest import small_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Refinement runs with the caller's threads; one keeps these tests quick on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_cli_refines_and_refuses_what_it_cannot_do(tmp_path, checkpoint, capsys):
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    assert main(["compress", src, "-o", str(tmp_path / "plain"), "--quality", "2"]) == 0
    assert main(["compress", src, "-o", str(tmp_path / "refined"), "--quality", "2", "--refine", "--refine-steps", "5"]) == 0
    plain, refined = (next((tmp_path / d).glob("*.mvae")).read_bytes() for d in ("plain", "refined"))
    assert refined != plain
    assert refined == medvae.load("medvae", quality=2).compress(  # the API's bytes, metadata aside
        pydicom.dcmread(src).pixel_array, bits_stored=16, refine_steps=5, metadata=medvae.read_metadata(refined))
    assert medvae.decompress(refined).shape == medvae.decompress(plain).shape == (128, 128)

    capsys.readouterr()
    assert main(["compress", src, "-o", str(tmp_path / "x"), "--model", checkpoint, "--refine"]) == 2
    assert "lambda" in capsys.readouterr().err
    assert main(["compress", src, "-o", str(tmp_path / "x"), "--refine-steps", "5"]) == 2
    assert "--refine-steps needs --refine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", src, "-o", str(tmp_path / "x"), "--refine", "--refine-steps", "0"])
    assert not (tmp_path / "x").exists()


def test_cli_help_states_the_library_default(capsys):
    from medvae.refine import DEFAULT_STEPS

    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    assert f"(default {DEFAULT_STEPS})" in " ".join(capsys.readouterr().out.split())


def test_evaluate_names_refined_curves_apart(tmp_path):
    src = pydicom.data.get_testdata_file("CT_small.dcm")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", src, "--codecs", "medvae=q1", "--refine", "--refine-steps", "3",
                 "--out", str(out), "--no-plots", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["codecs"]) == ["medvae (refined)"] and summary["meta"]["refine_steps"] == 3


def test_the_command_line_parser_does_not_load_torch():
    """``medvae info`` and ``--help`` start fast: building the parser (refinement options
    included) must not import torch, which only the commands that code need."""
    import subprocess
    import sys

    code = "import sys; from medvae.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
