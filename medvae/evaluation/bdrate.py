"""Bjøntegaard delta rate and delta quality (VCEG-M33) between two R-D curves.

BD-rate: fit log10(rate) as a cubic polynomial of quality for each curve
(least squares when a curve has more than four points), integrate both over
the quality range the curves share, and turn the mean log-rate difference into
a percentage::

    BD-rate = (10 ** (mean(log10 R_test − log10 R_anchor)) − 1) × 100 %

Negative means the test codec needs fewer bits for the same quality. BD-quality
swaps the axes (quality as a cubic of log-rate, over the shared log-rate
range) and is in the quality's unit (dB for PSNR and MS-SSIM in dB).

``method="pchip"`` replaces the cubic fit by a piecewise-cubic Hermite
interpolation through the points (as JVET's common test conditions do): it
needs only 3 points per curve and cannot overshoot between them.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from medvae.errors import InputError

#: Quality axes a summary can be compared on (MS-SSIM in dB, as in the literature).
QUALITY_METRICS = ("psnr", "ms_ssim_db", "psnr_soft_tissue", "psnr_lung", "psnr_bone")

Method = Literal["cubic", "pchip"]
#: Fewest distinct points per curve each method accepts.
MIN_POINTS = {"cubic": 4, "pchip": 3}


def _curve(rate: Sequence[float], quality: Sequence[float], name: str, method: Method) -> tuple[np.ndarray, np.ndarray]:
    if method not in MIN_POINTS:
        raise InputError(f"unknown BD method {method!r}; use cubic or pchip")
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise InputError(f"{name}: rate and quality need the same length")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    need = MIN_POINTS[method]
    if len(np.unique(q)) < need or len(np.unique(r)) < need:
        raise InputError(f"{name}: {method} BD needs at least {need} distinct finite R-D points, got {len(r)}")
    return np.log10(r), q


def _area(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: Method) -> float:
    """Integral of y(x) over [lo, hi]: a least-squares cubic, or PCHIP through the points."""
    if method == "cubic":
        p = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(p, hi) - np.polyval(p, lo))
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise InputError("pchip BD needs a curve whose points differ on both axes")
    return float(PchipInterpolator(x, y).integrate(lo, hi))


def _mean_gap(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray, method: Method) -> float:
    """Mean of (fit_b − fit_a) over the shared x range."""
    lo, hi = max(x_a.min(), x_b.min()), min(x_a.max(), x_b.max())
    if not hi > lo:
        raise InputError("the two R-D curves do not overlap")
    return (_area(x_b, y_b, lo, hi, method) - _area(x_a, y_a, lo, hi, method)) / (hi - lo)


def bd_rate(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    method: Method = "cubic",
) -> float:
    """Average rate change (%) of the test curve against the anchor at equal quality.

    Rates in any positive unit (bpp, bytes), the same for both curves.
    """
    lr_a, q_a = _curve(rate_anchor, quality_anchor, "anchor", method)
    lr_b, q_b = _curve(rate_test, quality_test, "test", method)
    return (10.0 ** _mean_gap(q_a, lr_a, q_b, lr_b, method) - 1.0) * 100.0


def bd_quality(
    rate_anchor: Sequence[float],
    quality_anchor: Sequence[float],
    rate_test: Sequence[float],
    quality_test: Sequence[float],
    method: Method = "cubic",
) -> float:
    """Average quality change (e.g. BD-PSNR in dB) of the test curve at equal rate."""
    lr_a, q_a = _curve(rate_anchor, quality_anchor, "anchor", method)
    lr_b, q_b = _curve(rate_test, quality_test, "test", method)
    return _mean_gap(lr_a, q_a, lr_b, q_b, method)


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


def bd_rate_summary(summary: dict[str, Any], anchor: str, test: str, metric: str = "psnr", method: Method = "cubic") -> float:
    """BD-rate (%) of ``test`` against ``anchor`` on ``metric`` from an evaluation summary."""
    if metric not in QUALITY_METRICS:
        raise InputError(f"unknown quality metric {metric!r}; use one of {', '.join(QUALITY_METRICS)}")
    ra, qa = curve(summary, anchor, metric)
    rb, qb = curve(summary, test, metric)
    try:
        return bd_rate(ra, qa, rb, qb, method)
    except InputError as exc:
        raise InputError(f"{test} vs {anchor} ({metric}): {exc}") from None


def bd_rate_per_image(
    rows: Sequence[dict[str, Any]], anchor: str, test: str, metric: str = "psnr", method: Method = "cubic"
) -> tuple[float, int, int]:
    """BD-rate (%) of ``test`` against ``anchor`` computed on each image's own two curves, over
    that image's shared quality range, then averaged: (mean %, images used, images without
    a usable pair of curves). Averaging curves over images first biases the result when
    two codecs sit at different rates on different images; this does not.

    ``rows``: per-image evaluation rows (:func:`medvae.evaluation.run.evaluate`); lossless
    and failed points are left out.
    """
    if metric not in QUALITY_METRICS:
        raise InputError(f"unknown quality metric {metric!r}; use one of {', '.join(QUALITY_METRICS)}")
    curves: dict[tuple, dict[str, tuple[list[float], list[float]]]] = {}
    for row in rows:
        if row["codec"] not in (anchor, test) or row.get("error") or row.get("lossless") or row.get(metric) in (None, ""):
            continue
        if not np.isfinite(float(row[metric])):  # decoded exactly: no point on a PSNR curve
            continue
        rate, quality = curves.setdefault((row["file"], row["slice"]), {}).setdefault(row["codec"], ([], []))
        rate.append(float(row["bpp"]))
        quality.append(float(row[metric]))
    values, skipped = [], 0
    for pair in curves.values():
        try:
            values.append(bd_rate(*pair[anchor], *pair[test], method))
        except (InputError, KeyError):
            skipped += 1
    if not values:
        raise InputError(f"{test} vs {anchor} ({metric}): no image has two overlapping curves")
    return float(np.mean(values)), len(values), skipped


def bd_rate_cell(rows: Sequence[dict[str, Any]], anchor: str, test: str, band: tuple[float, float] | None = None) -> str:
    """:func:`bd_rate_per_image` (PSNR, PCHIP) as a report's table cell, ``"+1.2 % (7 of 8)"``
    (images with two overlapping curves of all), or ``"no overlap"``; ``band``: only the points
    within that many bpp."""
    if band is not None:
        rows = [r for r in rows if band[0] <= float(r["bpp"]) <= band[1]]
    try:
        mean, used, skipped = bd_rate_per_image(rows, anchor, test, "psnr", "pchip")
    except InputError:
        return "no overlap"
    return f"{mean:+.1f} % ({used} of {used + skipped})"


def bd_table(
    summary: dict[str, Any], anchor: str, metrics: Sequence[str] = ("psnr", "ms_ssim_db"), method: Method = "cubic"
) -> dict[str, dict[str, float | str]]:
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
                out[codec][metric] = bd_rate_summary(summary, anchor, codec, metric, method)
            except InputError as exc:
                out[codec][metric] = str(exc).split(": ", 1)[-1]
    return out
