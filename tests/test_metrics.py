"""Metric values against cases computed by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from medvae import metrics


def test_bpp_and_compression_ratio_by_hand():
    assert metrics.bpp(1024, (64, 128)) == pytest.approx(1.0)
    assert metrics.bpp(3, (2, 3)) == pytest.approx(4.0)
    # 512x512 12-bit = 393216 bytes of information; 39321.6 bytes -> 10:1
    assert metrics.compression_ratio(39_322, (512, 512), 12) == pytest.approx(393_216 / 39_322)
    assert metrics.compression_ratio(1024, (64, 128), 16) == pytest.approx(16.0)
    assert metrics.compression_ratio(0, (4, 4), 12) == math.inf
    with pytest.raises(ValueError):
        metrics.bpp(10, (0, 5))


def test_psnr_of_a_known_error():
    ref = np.zeros((16, 16), np.uint16)
    dec = ref.copy()
    dec[0, :4] = 8  # 4 pixels off by 8 -> mse = 4*64/256 = 1
    assert metrics.mse(ref, dec) == pytest.approx(1.0)
    assert metrics.psnr(ref, dec, 12) == pytest.approx(20 * math.log10(4095))
    assert metrics.psnr(ref, dec, 16) == pytest.approx(20 * math.log10(65535))
    assert metrics.psnr(ref, ref, 12) == math.inf
    assert metrics.psnr_from_mse(4.0, 2.0) == pytest.approx(0.0)
    # signed data: the difference is taken without wrap-around
    a = np.array([[-1000, 1000]], np.int16)
    b = np.array([[1000, -1000]], np.int16)
    assert metrics.mse(a, b) == pytest.approx(4_000_000.0)
    assert metrics.max_abs_error(a, b) == 2000


def test_max_abs_error_unsigned_no_wraparound():
    a = np.array([[0, 65535]], np.uint16)
    b = np.array([[3, 65530]], np.uint16)
    assert metrics.max_abs_error(a, b) == 5
    assert isinstance(metrics.max_abs_error(a, b), int)


def test_windowed_psnr_clips_in_hu():
    # stored values with CT rescale: HU = stored - 1024
    ref = np.full((8, 8), 1024 + 40, np.uint16)  # 40 HU, inside soft-tissue window
    dec = ref.copy()
    dec[0, 0] += 20  # +20 HU inside the window (40 -> 60, window is [-160, 240])
    dec[1, 1] = 1024 + 3000  # 3000 HU: clipped to 240 -> error 200
    mse = (20**2 + 200**2) / 64
    expected = 10 * math.log10(400**2 / mse)
    got = metrics.windowed_psnr(ref, dec, 40, 400, slope=1.0, intercept=-1024.0)
    assert got == pytest.approx(expected)
    # an error entirely outside the window does not count
    ref2 = np.full((8, 8), 0, np.uint16)  # -1024 HU, below the window
    dec2 = ref2 + 50  # -974 HU, still below -160
    assert metrics.windowed_psnr(ref2, dec2, 40, 400, intercept=-1024) == math.inf
    # slope matters: stored step 1 = 2 HU
    ref3 = np.full((4, 4), 100, np.int16)
    dec3 = ref3 + 1
    assert metrics.windowed_psnr(ref3, dec3, 200, 1000, slope=2.0) == pytest.approx(
        10 * math.log10(1000**2 / 4)
    )
    assert set(metrics.CT_WINDOWS) == {"soft_tissue", "lung", "bone"}
    assert metrics.CT_WINDOWS["lung"] == (-600, 1500)


@pytest.mark.parametrize("side", [256, 96, 40, 20, 7, 2])
def test_ms_ssim_identical_is_one_and_degraded_is_less(side):
    rng = np.random.default_rng(side)
    ref = rng.integers(0, 4096, (side, side + 3)).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipping smoothing" fallbacks
        assert metrics.ms_ssim(ref, ref, 0, 4095) == 1.0
        noisy = np.clip(ref + rng.normal(0, 400, ref.shape), 0, 4095).astype(np.uint16)
        value = metrics.ms_ssim(ref, noisy, 0, 4095)
    assert 0.0 <= value < 0.999
    assert metrics.ms_ssim_db(1.0) == math.inf


def test_ms_ssim_settings_follow_the_library_constraint():
    assert metrics.ms_ssim_settings(512, 512) == (11, 5)
    assert metrics.ms_ssim_settings(161, 400) == (11, 5)
    win, levels = metrics.ms_ssim_settings(160, 160)
    assert levels == 5 and win < 11 and 160 > (win - 1) * 16
    assert metrics.ms_ssim_settings(33, 40) == (3, 5)
    assert metrics.ms_ssim_settings(32, 40) == (11, 1)  # single-scale SSIM fallback
    assert metrics.ms_ssim_settings(8, 40) == (7, 1)
    for side in range(1, 200):
        win, levels = metrics.ms_ssim_settings(side, side)
        assert win % 2 == 1 and win <= side
        if levels > 1:
            assert side > (win - 1) * 16


def test_ms_ssim_matches_pytorch_msssim_on_large_images():
    from pytorch_msssim import ms_ssim as ref_ms_ssim

    rng = np.random.default_rng(0)
    ref = rng.integers(100, 3000, (192, 200)).astype(np.uint16)
    dec = np.clip(ref + rng.normal(0, 50, ref.shape), 0, 4095).astype(np.uint16)
    x = torch.from_numpy((ref.astype(np.float64) - 100) / 2900.0)[None, None]
    y = torch.from_numpy((dec.astype(np.float64) - 100) / 2900.0)[None, None]
    expected = float(ref_ms_ssim(x, y, data_range=1.0))
    assert metrics.ms_ssim(ref, dec, 100, 3000) == pytest.approx(expected, rel=1e-6)


def test_ms_ssim_db_by_hand():
    assert metrics.ms_ssim_db(0.9) == pytest.approx(10.0)
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)


def test_psnr_torch_batch_mean():
    x = torch.zeros(2, 1, 4, 4)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 20 dB
    y[1] += 0.01  # mse 1e-4 -> 40 dB
    assert float(metrics.psnr_torch(x, y)) == pytest.approx(30.0, abs=1e-4)
    assert float(metrics.psnr_torch(x * 255, y * 255, peak=255.0)) == pytest.approx(30.0, abs=1e-4)


def test_ms_ssim_torch_is_differentiable_on_small_crops():
    x = torch.rand(2, 1, 64, 64, dtype=torch.float64)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    value = metrics.ms_ssim_torch(x, y)
    assert value.shape == (2,)
    value.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_image_metrics_row():
    ref = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    dec = ref.copy()
    dec[0, 0] ^= 1
    row = metrics.image_metrics(
        ref, dec, n_bytes=512, bits_stored=12, intercept=-1024, windows=metrics.CT_WINDOWS
    )
    assert row["bpp"] == pytest.approx(1.0)
    assert row["compression_ratio"] == pytest.approx(12.0)
    assert row["max_abs_error"] == 1
    assert row["psnr"] == pytest.approx(10 * math.log10(4095**2 * 4096))
    assert {"psnr_soft_tissue", "psnr_lung", "psnr_bone"} <= set(row)
    assert 0.99 < row["ms_ssim"] < 1.0
