"""``medvae-vr``: one set of weights for every quality from 0 to 7 (gain units; below 1 extrapolated)."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pydicom
import pytest
import torch

import medvae
from medvae import bitstream, metrics, zoo
from medvae.cli import main
from medvae.errors import BitstreamError, InputError
from medvae.losses import RateDistortionLoss
from medvae.exact.layers import geometric_mix
from medvae.models.gain import mix
from medvae.models.variable_rate import LMBDAS
from medvae.models.widen import initialize_from
from tests.conftest import CORPUS, REPO, small_model

CT_SLICE = CORPUS / "ct" / "totalseg-abdomen"
DATA = REPO / "tests" / "data"


def _image(shape=(80, 96), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (2000 + 800 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 40, shape)).clip(0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def small_codec() -> medvae.Codec:
    return medvae.Codec(small_model("medvae-vr", seed=3))


@pytest.fixture(scope="module")
def ct_slice() -> np.ndarray:
    files = sorted(CT_SLICE.glob("*.dcm"))
    if not files:
        pytest.skip(f"sample corpus not found at {CORPUS}")
    return np.ascontiguousarray(pydicom.dcmread(files[0]).pixel_array[128:384, 96:352])  # the body's middle, 256×256


@pytest.mark.parametrize("model", ["medvae-vr", "medvae-ctx"])
def test_any_quality_in_the_range_codes_and_rates_and_psnr_rise_with_quality_on_a_real_slice(ct_slice, model):
    """Between two levels too: a linear mix of the gains (format 5) lost 5–8 dB halfway."""
    codec = medvae.load(model)
    assert codec.variable_rate and codec.quality_range == (0.0, float(len(LMBDAS)))
    sizes, psnrs = [], []
    for quality in (0, 0.5, 1, 1.7, 2.5, 3.25, 4, 5.1, 6, 7):  # below 1: extrapolated
        data = codec.compress(ct_slice, quality=quality, bits_stored=12)
        header = bitstream.read_header(data)
        decoded = codec.decompress(data)
        assert header.version == bitstream.VARIABLE_RATE_VERSION and header.quality == round(quality * 256) / 256  # 256²: too small for a correction
        assert header.psnr == pytest.approx(metrics.psnr(ct_slice, decoded, 12), abs=0.006)  # the file's own PSNR
        sizes.append(len(data))
        psnrs.append(header.psnr)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert psnrs[:-1] == sorted(psnrs[:-1]) and psnrs[-1] > psnrs[0] + 10, psnrs  # (medvae-vr's q7 is no better than q6)
    np.testing.assert_array_equal(medvae.decompress(data), decoded)  # the shipped weights are found by the header


def test_integer_qualities_keep_the_ladders_lambda_and_the_package_functions_take_the_model_by_name():
    assert zoo.default_model() == "medvae-ctx" and zoo.default_model(max_error=0) == "medvae"  # medvae-vr: by name
    codec = medvae.load("medvae-vr", quality=3)
    assert codec.default_quality == 3 and codec.lmbda == pytest.approx(zoo.shipped_lmbda(zoo.shipped_path("medvae", 3)))
    data = medvae.compress(_image(), 2.5, model="medvae-vr", bits_stored=12)
    assert bitstream.read_header(data).model == "medvae-vr" and bitstream.read_header(data).quality == 2.5
    np.testing.assert_array_equal(medvae.decompress(data), codec.decompress(data))  # weights found by the header


def test_qualities_outside_the_range_and_on_single_rate_weights_are_refused(small_codec):
    for bad in (-0.01, 7.01, float("nan"), 100):
        with pytest.raises(InputError, match="from 0 to 7"):
            small_codec.compress(_image(), quality=bad)
    with pytest.raises(InputError, match="variable-rate"):
        medvae.Codec(small_model("medvae")).compress(_image(), quality=3)
    with pytest.raises(medvae.MedVAEError, match="fractional quality"):
        medvae.load("medvae", quality=2.5)


@pytest.mark.parametrize("family", ["medvae-vr", "medvae-ctx"])
def test_a_quality_coder_runs_g_a_once_and_writes_what_compress_writes(family, monkeypatch, syntheses):
    """... and sizes a quality's file without the synthesis transform."""
    codec = medvae.Codec(small_model(family, seed=4))
    image, padded = _image(), _image(seed=1)
    padded[:, :7] = 0  # scanner padding: stored exactly, outside the model's value range
    calls = []
    analysis = codec.twin.g_a.forward
    monkeypatch.setattr(codec.twin.g_a, "forward", lambda x: calls.append(1) or analysis(x))
    for picture, options in ((image, {}), (padded, {"bits_stored": 12, "metadata": b"header"}), (image, {"value_range": (0, 4095)})):
        coder = codec.quality_coder(picture, **options)
        sizes = [coder.size(q) for q in (0.5, 2.25, 5, 7)]
        assert not syntheses
        coded = [coder.write(q) for q in (0.5, 2.25, 5, 7)]
        assert len(calls) == 1 and len(syntheses) == 4  # one analysis transform for the four qualities
        assert sizes == [len(data) for data, _ in coded] and len(set(sizes)) > 1
        for q, (data, pixels) in zip((0.5, 2.25, 5, 7), coded):
            assert data == codec.compress(picture, quality=q, **options)  # g_a once more each
            np.testing.assert_array_equal(pixels, codec.decompress(data))
        calls.clear(), syntheses.clear()
    with pytest.raises(InputError, match="quality is write"):
        codec.quality_coder(image, quality=3)
    with pytest.raises(InputError, match="without alternatives"):
        medvae.Codec(small_model(family, seed=4), alternatives=[medvae.Codec(small_model(family, seed=5))]).quality_coder(image)
    with pytest.raises(InputError, match="without alternatives"):
        medvae.Codec(small_model("medvae")).quality_coder(image)
    both = medvae.Codec(small_model(family, seed=4), alternatives=[medvae.Codec(small_model(family, seed=5))])
    with pytest.raises(InputError, match="one weights' lossy files"):  # its choice weighs the error a size skips
        both.compress_with_pixels(image, synthesize=False)


def test_a_forged_quality_is_refused_and_another_decodes_to_other_pixels_the_checksum_catches():
    codec = medvae.load("medvae-vr")  # trained weights: ŷ is not all zeros, so the gain matters
    data = codec.compress(_image(), quality=4)
    header, strings, metadata = bitstream.unpack(data)
    for forged, error in ((9.0, "outside"), (4.5, "checksum")):
        with pytest.raises(BitstreamError, match=error):
            codec.decompress(bitstream.pack(dataclasses.replace(header, quality=forged), strings, metadata))
    with pytest.raises(BitstreamError, match="format-3 file cannot come from medvae-vr"):
        codec.decompress(bitstream.pack(dataclasses.replace(header, quality=None, psnr=None), strings, metadata))


def test_a_quality_between_two_levels_mixes_their_gains_geometrically_and_exactly(small_codec):
    gains = small_codec.twin.gain
    small_codec.compress(_image(), quality=2.25)
    level2, level3 = gains.integers[1], gains.integers[2]
    mixed = gains.vector()
    assert torch.equal(mixed * 256, torch.round(mixed * 256))  # integers over 256: exact in float64
    torch.testing.assert_close(mixed, level2**0.75 * level3**0.25, rtol=0, atol=0.5 / 256)
    assert bool(((mixed - level2) * (mixed - level3) <= 0).all())  # between the two levels, channel by channel
    # the geometric mean of 256 and 1024 is 512, and 100 stays 100: decimal arithmetic, no libm
    assert geometric_mix(torch.tensor([256.0, 100.0]), torch.tensor([1024.0, 100.0]), 128).tolist() == [512.0, 100.0]
    float_gains = small_codec.model.gain.gain.detach().double()
    torch.testing.assert_close(mix(float_gains, 2 * 256), float_gains[1])  # a level is its own row
    torch.testing.assert_close(mix(float_gains, 2 * 256 + 64, geometric=False), 0.75 * float_gains[1] + 0.25 * float_gains[2])


def test_below_quality_1_the_gains_continue_the_geometric_line_exactly(small_codec):
    """Quality q < 1 continues the line through levels 1 and 2 for two levels (quality 0:
    g_1³ / g_2²), in the float model and, to the 1/256 of the exact form, in its twin; the
    rate falls below what quality 1 spends; a linear mix (format 5) has no such qualities."""
    gains = small_codec.twin.gain
    float_gains = small_codec.model.gain.gain.detach().double()
    torch.testing.assert_close(mix(float_gains, 0), float_gains[0] ** 3 / float_gains[1] ** 2)
    torch.testing.assert_close(mix(float_gains, 128), float_gains[0] ** 2 / float_gains[1])  # quality 0.5: one level down
    for quality in (0.5, 0.25, 0):
        small_codec.compress(_image(), quality=quality)
        level1, level2 = gains.integers[0], gains.integers[1]
        exponent = 2 * (1 - quality)
        torch.testing.assert_close(gains.vector(), level1 ** (1 + exponent) / level2**exponent, rtol=0, atol=0.5 / 256)
    shipped = medvae.load("medvae-vr")  # trained weights: the rate follows the gains
    sizes = [len(shipped.compress(_image((160, 192)), quality=quality, bits_stored=12)) for quality in (1, 0.5, 0)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3, sizes
    assert geometric_mix(torch.tensor([256.0]), torch.tensor([1024.0]), -256).tolist() == [64.0]  # 256² / 1024, in decimal
    with pytest.raises(ValueError, match="no exact form"):
        geometric_mix(torch.tensor([2.0**20]), torch.tensor([1.0]), -512)  # 2^60: beyond the fixed-point bound
    with pytest.raises(InputError, match="geometrically"):
        mix(float_gains, 128, geometric=False)


def test_weights_whose_extrapolated_gains_have_no_exact_form_refuse_that_quality_and_keep_theirs():
    """An inverse gain of 100 at level 1 and 10 at level 2 extrapolates to 10^5 at quality 0,
    beyond the exact form's bound: coding there is an InputError up front, and the codec goes
    on coding at the quality it had."""
    model = small_model("medvae-vr", seed=3)
    with torch.no_grad():
        model.inverse_gain.gain[0].fill_(100.0)
        model.inverse_gain.gain[1].fill_(10.0)
    codec = medvae.Codec(model)
    before = codec.compress(_image(), quality=3)
    with pytest.raises(InputError, match="quality 0 has no exact form"):
        codec.compress(_image(), quality=0)
    assert codec.model.quality == 3 and codec.twin.gain.units == codec.twin.inverse_gain.units == 3 * 256
    assert codec.compress(_image(), quality=3) == before


def test_a_format5_file_from_the_release_before_decodes_with_its_linear_mix():
    """Format-5 files mixed the gains of two levels linearly; they still decode to their pixels."""
    data = (DATA / "format5-medvae-ctx-q4.5.mvae").read_bytes()
    header = bitstream.read_header(data)
    assert (header.version, header.quality) == (bitstream.LINEAR_MIX_VERSION, 4.5)
    try:  # the weights it names: shipped, or kept in the optional package once replaced
        weights = zoo.path_for_fingerprint("medvae-ctx", header.fingerprint)
    except BitstreamError:
        if package := zoo.optional_package("medvae-ctx", header.fingerprint):
            pytest.skip(f"its weights come with the optional package {package}, not installed")
        raise
    codec = medvae.load(weights)
    np.testing.assert_array_equal(codec.decompress(data), np.load(DATA / "format5-medvae-ctx-q4.5.decoded.npy"))
    source = np.load(DATA / "format5-medvae-ctx-q4.5.source.npy")
    again = codec.compress(source, quality=4.5, bits_stored=12)  # now written as format 6, mixed geometrically
    assert bitstream.read_header(again).version == bitstream.VARIABLE_RATE_VERSION == 6
    assert bitstream.read_header(again).psnr > header.psnr
    # format 5 knew no quality below 1: one forged there (its checksum made good) is refused
    forged = data[:-4].replace(struct.pack("<H", 1152), struct.pack("<H", 128), 1)
    with pytest.raises(BitstreamError, match="quality 0.5 cannot be decoded: format-5 files"):
        codec.decompress(forged + struct.pack("<I", zlib.crc32(forged)))


def test_training_draws_a_level_per_image_and_the_loss_weights_each_by_its_lambda():
    model = small_model("medvae-vr").train()
    torch.manual_seed(0)
    x = torch.rand(6, 1, 64, 64)
    out = model(x)
    assert all(min(abs(v - lmbda) for lmbda in LMBDAS) < 1e-6 for v in out["lmbda"].tolist()) and out["lmbda"].shape == (6,)
    loss = RateDistortionLoss(lmbda=123.0)(out, x)  # the model's λ replace the configured one
    per_image = 255.0**2 * ((out["x_hat"] - x) ** 2).mean(dim=(1, 2, 3))
    assert float(loss["loss"].detach()) == pytest.approx(float((loss["bpp"] + (out["lmbda"] * per_image).mean()).detach()), rel=1e-5)
    model.eval()
    assert model(x)["lmbda"].tolist() == pytest.approx([LMBDAS[4]] * 6)  # the default quality 5


def test_a_variable_rate_model_starts_from_trained_medvae_weights_all_but_its_gains():
    base = small_model("medvae", seed=5)
    model = small_model("medvae-vr", seed=6)
    start = model.gain.gain.detach().clone()
    initialize_from(model, base)
    assert torch.equal(model.g_a[0].weight, base.g_a[0].weight) and torch.equal(model.gain.gain, start)
    with pytest.raises(medvae.MedVAEError, match="cannot start"):
        initialize_from(small_model("medvae"), small_model("balle2018"))


def test_calibration_covers_every_level():
    from medvae.exact.calibrate import MARGIN, _as_unit, layer_peaks, synthetic_images
    from medvae.exact.fixed import frac_for

    model = small_model("medvae-vr", seed=3).eval()
    model.quality = 2
    plan = medvae.exact.calibrate(model)
    assert model.quality == 2  # calibration leaves the model's quality as it found it

    def gain_peak(quality):
        model.quality = quality
        images = [torch.from_numpy(_as_unit(image))[None, None] for image in synthetic_images()]
        return layer_peaks(model, lambda: [model(x) for x in images])["gain"]

    peaks = [gain_peak(q) for q in range(1, 8)]
    assert plan["gain"] == frac_for(max(peaks), MARGIN) < frac_for(peaks[0], MARGIN)  # the lowest level alone would saturate the highest


def test_cli_codes_a_fractional_quality_and_info_reports_it(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _image())
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "out"), "--model", "medvae-vr", "--quality", "4.5"]) == 0
    data = (tmp_path / "out" / "a.mvae").read_bytes()
    header = bitstream.read_header(data)
    assert (header.model, header.quality) == ("medvae-vr", 4.5)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out" / "a.mvae")]) == 0
    shown = capsys.readouterr().out
    assert "quality  4.5 (variable-rate model)" in shown and f"psnr     {header.psnr:.2f} dB" in shown
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "x"), "--model", "medvae", "--quality", "2.5"]) == 2
    assert not (tmp_path / "x").exists()
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "low"), "--model", "medvae-vr", "--quality", "0.25"]) == 0
    assert bitstream.read_header((tmp_path / "low" / "a.mvae").read_bytes()).quality == 0.25  # extrapolated, below level 1
    assert main(["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "y"), "--quality", "-0.5"]) == 2
    assert not (tmp_path / "y").exists()


def test_a_rate_independent_hyperprior_codes_z_alike_at_every_quality_and_scales_by_the_gain():
    """medvae-vbr, started from medvae weights: z is the same at every quality, and the scales of
    y·g are the medvae's scales times g, so each level starts at its latent's spread."""
    base = small_model("medvae", seed=5).eval()
    model = small_model("medvae-vbr", seed=6).eval()
    initialize_from(model, base)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        y0, z0 = base.analyze(x)
        scales0 = base.scales_from(base.hyper_decode(torch.round(z0)))
        for quality in (1, 3.5, 7):
            model.quality = quality
            gain = mix(model.gain.gain, model.gain.units, model.gain.geometric)[None, :, None, None]
            y, z = model.analyze(x)
            assert torch.equal(z, z0)
            torch.testing.assert_close(y, y0 * gain)
            torch.testing.assert_close(model.scales_from(model.hyper_decode(torch.round(z))), scales0 * gain)
    vr = small_model("medvae-vr", seed=6).eval()
    initialize_from(vr, base)
    vr.quality = 1
    with torch.no_grad():
        assert not torch.equal(vr.analyze(x)[1], z0)  # medvae-vr's hyperprior reads the gained latent
