"""Bjøntegaard delta rate and delta quality (VCEG-M33) between two R-D curves.

BD-rate: fit log10(rate) as a cubic polynomial of quality for each curve
(least squares when a curve has more than four points), integrate both over
the quality range the curves share, and turn the mean log-rate difference into
a percentage::

    BD-rate = (10 ** (mean(log10 R_test − log10 R_anchor)) − 1) × 100 %

Negative means the test codec needs fewer bits for the same quality. BD-quality
swaps the axes (quality as a cubic of log-rate, over the shared log-rate
range) and is in the quality's unit (dB for PSNR and MS-SSIM in dB).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medvae.errors import InputError

#: Quality axes a summary can be compared on (MS-SSIM in dB, as in the literature).
QUALITY_METRICS = ("psnr", "ms_ssim_db", "psnr_soft_tissue", "psnr_lung", "psnr_bone")


def _curve(rate: Sequence[float], quality: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise InputError(f"{name}: rate and quality need the same length")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    if len(np.unique(q)) < 4 or len(np.unique(r)) < 4:
        raise InputError(f"{name}: BD needs at least 4 distinct finite R-D points, got {len(r)}")
    return np.log10(r), q


def _mean_gap(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray) -> float:
    """Mean of (fit_b − fit_a) over the shared x range, cubic fits of y against x."""
    lo, hi = max(x_a.min(), x_b.min()), min(x_a.max(), x_b.max())
    if not hi > lo:
        raise InputError("the two R-D curves do not overlap")
    p_a = np.polyint(np.polyfit(x_a, y_a, 3))
    p_b = np.polyint(np.polyfit(x_b, y_b, 3))
    area_a = np.polyval(p_a, hi) - np.polyval(p_a, lo)
    area_b = np.polyval(p_b, hi) - np.polyval(p_b, lo)
    return float((area_b - area_a) / (hi - lo))


def bd_rate(
    rate_anchor: Sequence[float], quality_anchor: Sequence[float], rate_test: Sequence[float], quality_test: Sequence[float]
) -> float:
    """Average rate change (%) of the test curve against the anchor at equal quality.

    Rates in any positive unit (bpp, bytes), the same for both curves.
    """
    lr_a, q_a = _curve(rate_anchor, quality_anchor, "anchor")
    lr_b, q_b = _curve(rate_test, quality_test, "test")
    return (10.0 ** _mean_gap(q_a, lr_a, q_b, lr_b) - 1.0) * 100.0


def bd_quality(
    rate_anchor: Sequence[float], quality_anchor: Sequence[float], rate_test: Sequence[float], quality_test: Sequence[float]
) -> float:
    """Average quality change (e.g. BD-PSNR in dB) of the test curve at equal rate."""
    lr_a, q_a = _curve(rate_anchor, quality_anchor, "anchor")
    lr_b, q_b = _curve(rate_test, quality_test, "test")
    return _mean_gap(lr_a, q_a, lr_b, q_b)


def curve(summary: dict[str, Any], codec: str, metric: str = "psnr") -> tuple[list[float], list[float]]:
    """(bpp, quality) of a codec's lossy, complete points in an evaluation summary."""
    try:
        points = summary["codecs"][codec]["points"]
    except KeyError:
        known = ", ".join(summary.get("codecs", {}))
        raise InputError(f"no codec {codec!r} in the results (have: {known})") from None
    rate, quality = [], []
    for p in points:
        if p["lossless"] or not p.get("complete", True):
            continue
        if p.get("bpp") is None or p.get(metric) is None:
            continue
        rate.append(float(p["bpp"]))
        quality.append(float(p[metric]))
    return rate, quality


def bd_rate_summary(summary: dict[str, Any], anchor: str, test: str, metric: str = "psnr") -> float:
    """BD-rate (%) of ``test`` against ``anchor`` on ``metric`` from an evaluation summary."""
    if metric not in QUALITY_METRICS:
        raise InputError(f"unknown quality metric {metric!r}; use one of {', '.join(QUALITY_METRICS)}")
    ra, qa = curve(summary, anchor, metric)
    rb, qb = curve(summary, test, metric)
    try:
        return bd_rate(ra, qa, rb, qb)
    except InputError as exc:
        raise InputError(f"{test} vs {anchor} ({metric}): {exc}") from None


def bd_table(summary: dict[str, Any], anchor: str, metrics: Sequence[str] = ("psnr", "ms_ssim_db")) -> dict[str, dict[str, float | str]]:
    """BD-rate of every other codec against ``anchor``: ``{codec: {metric: % or reason}}``."""
    if anchor not in summary.get("codecs", {}):
        raise InputError(f"anchor {anchor!r} is not in the results (have: {', '.join(summary.get('codecs', {}))})")
    out: dict[str, dict[str, float | str]] = {}
    for codec in summary["codecs"]:
        if codec == anchor:
            continue
        out[codec] = {}
        for metric in metrics:
            try:
                out[codec][metric] = bd_rate_summary(summary, anchor, codec, metric)
            except InputError as exc:
                out[codec][metric] = str(exc).split(": ", 1)[-1]
    return out
