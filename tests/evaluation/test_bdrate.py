"""Bjøntegaard delta rate against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvae.errors import InputError
from medvae.evaluation.bdrate import bd_quality, bd_rate, bd_rate_summary, bd_table

RATE = np.array([0.1, 0.25, 0.5, 1.0, 2.0, 3.0])
PSNR = np.array([36.0, 41.0, 45.5, 50.0, 56.0, 60.0])


def test_curve_against_itself_is_zero():
    assert bd_rate(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_ten_percent_fewer_bits_is_minus_ten_percent():
    assert bd_rate(RATE, PSNR, 0.9 * RATE, PSNR) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(RATE, PSNR, 1.25 * RATE, PSNR) == pytest.approx(25.0, abs=1e-6)
    # order of the points does not matter
    perm = [3, 0, 5, 1, 4, 2]
    assert bd_rate(RATE, PSNR, 0.9 * RATE[perm], PSNR[perm]) == pytest.approx(-10.0, abs=1e-6)


def test_hand_computed_pair_with_partial_overlap():
    # Anchor: log10 R = (D - 40) / 10 exactly (a cubic with zero higher terms), D in 30..40.
    # Test:   log10 R = (D - 40) / 10 + 0.01 (D - 30), D in 32..44.
    # Overlap 32..40; mean of 0.01 (D - 30) over it = 0.01 * 6 = 0.06,
    # so BD-rate = 10**0.06 - 1 = 14.8154 %.
    d_a = np.linspace(30, 40, 5)
    d_b = np.linspace(32, 44, 7)
    r_a = 10 ** ((d_a - 40) / 10)
    r_b = 10 ** ((d_b - 40) / 10 + 0.01 * (d_b - 30))
    assert bd_rate(r_a, d_a, r_b, d_b) == pytest.approx((10**0.06 - 1) * 100, abs=1e-6)


def test_bd_psnr_by_hand():
    # Test curve is the anchor shifted up by 0.5 dB everywhere: BD-PSNR = +0.5 dB,
    # and BD-rate = 10**(-0.5 / 10 * ...) for a linear log-rate model: log10 R = (D - 40) / 10
    # -> same D needs log10 R lower by 0.05 -> 10**-0.05 - 1 = -10.87 %.
    d = np.linspace(30, 45, 6)
    r = 10 ** ((d - 40) / 10)
    assert bd_quality(r, d, r, d + 0.5) == pytest.approx(0.5, abs=1e-9)
    assert bd_rate(r, d, r, d + 0.5) == pytest.approx((10**-0.05 - 1) * 100, abs=1e-6)


def test_errors_are_input_errors():
    with pytest.raises(InputError):
        bd_rate(RATE[:3], PSNR[:3], RATE, PSNR)  # fewer than 4 points
    with pytest.raises(InputError):
        bd_rate(RATE, PSNR, RATE, PSNR + 100)  # no overlap
    # infinite qualities (lossless points) are ignored, not fatal
    assert bd_rate(np.append(RATE, 5.0), np.append(PSNR, math.inf), RATE, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_pchip_needs_three_points_and_agrees_on_exact_cases():
    d_a = np.array([30.0, 35.0, 40.0])  # three points: too few for the cubic fit
    r_a = 10 ** ((d_a - 40) / 10)
    with pytest.raises(InputError):
        bd_rate(r_a, d_a, r_a, d_a)
    assert bd_rate(r_a, d_a, r_a, d_a, method="pchip") == pytest.approx(0.0, abs=1e-9)
    # Log-rate linear in quality is reproduced exactly by PCHIP. Test curve sampled at other
    # qualities, 0.05 lower in log10 R; overlap 32..40 dB -> 10**-0.05 - 1 = -10.87 %.
    d_b = np.array([32.0, 36.0, 40.0, 44.0])
    r_b = 10 ** ((d_b - 40) / 10 - 0.05)
    assert bd_rate(r_a, d_a, r_b, d_b, method="pchip") == pytest.approx((10**-0.05 - 1) * 100, abs=1e-9)
    assert bd_quality(r_a, d_a, r_a, d_a + 0.5, method="pchip") == pytest.approx(0.5, abs=1e-9)
    assert bd_rate(RATE, PSNR, 0.9 * RATE, PSNR, method="pchip") == pytest.approx(-10.0, abs=1e-9)
    with pytest.raises(InputError):
        bd_rate(RATE, PSNR, RATE, PSNR, method="spline")


def _summary(curves):
    return {
        "format": "medvae-evaluation-v1",
        "codecs": {
            name: {
                "points": [
                    {"bpp": float(r), "psnr": float(q), "ms_ssim_db": float(q) / 2, "lossless": False, "complete": True}
                    for r, q in zip(rate, quality)
                ]
                + [{"bpp": 6.0, "psnr": None, "ms_ssim_db": None, "lossless": True, "complete": True}]
            }
            for name, (rate, quality) in curves.items()
        },
    }


def test_summary_helpers():
    summary = _summary({"anchor": (RATE, PSNR), "better": (0.8 * RATE, PSNR), "short": (RATE[:2], PSNR[:2])})
    assert bd_rate_summary(summary, "anchor", "better") == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate_summary(summary, "anchor", "better", "ms_ssim_db") == pytest.approx(-20.0, abs=1e-6)
    table = bd_table(summary, "anchor")
    assert table["better"]["psnr"] == pytest.approx(-20.0, abs=1e-6)
    assert isinstance(table["short"]["psnr"], str)  # explained, not a crash
    with pytest.raises(InputError):
        bd_table(summary, "missing")
    with pytest.raises(InputError):
        bd_rate_summary(summary, "anchor", "better", "bpp")


def test_bd_rate_per_image_averages_each_images_own_comparison():
    from medvae.evaluation.bdrate import bd_rate_per_image

    def rows(codec, image, rates, offset):
        gain = 0.9 if codec == "b" else 1.0  # b reaches a's quality with 10 % fewer bits
        return [{"codec": codec, "file": image, "slice": 0, "bpp": r, "psnr": 30 + 10 * np.log10(r / gain) + offset, "error": "",
                 "lossless": False} for r in rates]

    # on each image the test needs 10 % fewer bits; the images differ by 20 dB, and the
    # two codecs sample them at different rates, so averaging curves first would mislead
    data = rows("a", "x", [0.1, 0.2, 0.4, 0.8, 1.6], 0) + rows("b", "x", [0.09, 0.18, 0.36, 0.72, 1.44], 0)
    data += rows("a", "y", [0.1, 0.2, 0.4, 0.8, 1.6], 20) + rows("b", "y", [0.18, 0.36, 0.72, 1.44, 2.88], 20)
    data += [{"codec": "b", "file": "x", "slice": 0, "bpp": 5.0, "psnr": float("inf"), "error": "", "lossless": False}]  # exact: ignored
    data += [{"codec": "b", "file": "z", "slice": 0, "bpp": 1.0, "psnr": 40.0, "error": "", "lossless": False}]  # no anchor curve
    mean, used, skipped = bd_rate_per_image(data, "a", "b")
    assert mean == pytest.approx(-10.0, abs=1e-6) and used == 2 and skipped == 1
    with pytest.raises(InputError):
        bd_rate_per_image(data, "a", "c")
