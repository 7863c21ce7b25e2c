"""R-D curves and the visual comparison figure (matplotlib, no pyplot state).

:func:`rd_plot` draws bpp against a quality metric, one line per codec, like
the seed paper's figures 6–8; :func:`visual_comparison` shows one slice decoded
by each codec at (about) the same bpp with zoomed crops, like its figure 9.
Both save PNG and SVG. Figures are built with :class:`matplotlib.figure.Figure`
(rendered by Agg), so plotting never changes the caller's pyplot backend, e.g.
inline plots in a notebook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medvae.evaluation.bdrate import curve
from medvae.metrics import psnr

#: Axis labels of the plottable metrics.
LABELS = {
    "psnr": "PSNR (dB, peak 2^BitsStored − 1)",
    "ms_ssim_db": "MS-SSIM (dB) = −10·log10(1 − MS-SSIM)",
    "ms_ssim": "MS-SSIM",
    "psnr_soft_tissue": "PSNR soft-tissue window W400/L40 (dB)",
    "psnr_lung": "PSNR lung window W1500/L−600 (dB)",
    "psnr_bone": "PSNR bone window W1800/L400 (dB)",
}
_MARKERS = "osD^v<>ph*XP"


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def rd_plot(
    summary: dict[str, Any],
    metric: str,
    stem: str | Path,
    *,
    codecs: Sequence[str] | None = None,
    max_bpp: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """bpp vs ``metric``, one line per codec; lossless rates go in the legend. Returns the files."""
    fig = _figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    names = list(codecs or summary["codecs"])
    for k, name in enumerate(names):
        fam = summary["codecs"][name]
        rate, quality = curve(summary, name, metric)
        order = np.argsort(rate)
        rate, quality = np.asarray(rate)[order], np.asarray(quality)[order]
        if max_bpp is not None:
            keep = rate <= max_bpp
            rate, quality = rate[keep], quality[keep]
        lossless = [p["bpp"] for p in fam["points"] if p["lossless"] and p.get("bpp") is not None]
        label = name + (f" (lossless {lossless[0]:.2f} bpp)" if lossless else "")
        if not fam.get("native_depth", True):
            label += " *"
        if len(rate) == 0:
            continue
        style = "-" if fam.get("learned") else "--"
        ax.plot(rate, quality, style, marker=_MARKERS[k % len(_MARKERS)], ms=4, lw=1.5, label=label)
    ax.set_xlabel("bits per pixel (real bytes)")
    ax.set_ylabel(LABELS.get(metric, metric))
    meta = summary.get("meta", {})
    default_title = f"{meta.get('n_images', '?')} images" + (f", split {meta['split']}" if meta.get("split") else "")
    ax.set_title(title or default_title)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="lower right")
    if any(not f.get("native_depth", True) for f in summary["codecs"].values()):
        fig.text(0.01, 0.01, "* not at native bit depth for some images (see notes)", fontsize=7)
    return _save(fig, Path(stem))


def rate_control_plot(achieved: Mapping[Any, Sequence[float]], stem: str | Path, *, title: str | None = None) -> list[Path]:
    """What rate control achieved, per target, as a deviation from what was asked: one dot per
    image. ``achieved`` maps each :class:`medvae.rate_control.Target` to the figures achieved
    (ratio, bpp or PSNR, as asked). Ratio and bpp targets on the left, in % of the target, with
    the ±3 % band; PSNR targets on the right, in dB. The contract (never above a bpp, never below
    a ratio or PSNR) is the side of zero each is on."""
    fig = _figure(figsize=(10, 4.2))
    rates, psnrs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    budgets = [t for t in achieved if t.psnr is None]
    fidelities = [t for t in achieved if t.psnr is not None]
    for ax, targets, unit in ((rates, budgets, "achieved − asked (% of the target)"), (psnrs, fidelities, "achieved − asked PSNR (dB)")):
        for k, target in enumerate(targets):
            if target.psnr is not None:
                values, colour = [v - target.psnr for v in achieved[target]], "C2"
            else:
                asked = target.bpp if target.bpp is not None else target.ratio
                values, colour = [100 * (v / asked - 1) for v in achieved[target]], "C0" if target.bpp is not None else "C1"
            ax.plot([k] * len(values), values, "o", ms=5, alpha=0.7, color=colour)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(targets)), [str(t) for t in targets], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, max(len(targets), 1) - 0.4)
        ax.set_ylabel(unit)
        ax.grid(True, axis="y", alpha=0.3)
    rates.axhspan(-3, 3, color="0.9", zorder=0, label="within 3 %")
    rates.legend(loc="upper left", fontsize=8)
    rates.set_title("ratio (orange): at or above 0; bpp (blue): at or below 0", fontsize=9)
    psnrs.set_title("PSNR: at or above 0", fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, Path(stem))


def plot_summary(summary: dict[str, Any], out_dir: str | Path, *, max_bpp: float | None = None) -> list[Path]:
    """The standard set: PSNR, MS-SSIM (dB) and, with CT images, the soft-tissue PSNR."""
    out_dir = Path(out_dir)
    metrics = ["psnr", "ms_ssim_db"]
    has_ct = any(p.get("psnr_soft_tissue") is not None for f in summary["codecs"].values() for p in f["points"])
    if has_ct:
        metrics += ["psnr_soft_tissue", "psnr_lung"]
    paths: list[Path] = []
    for metric in metrics:
        paths += rd_plot(summary, metric, out_dir / f"rd_{metric}", max_bpp=max_bpp)
    return paths


def display(image: np.ndarray, window: tuple[float, float] | None, slope: float = 1.0, intercept: float = 0.0) -> tuple[np.ndarray, float, float]:
    """(values, vmin, vmax) to show: physical units and a (center, width) window, or the full range."""
    x = image.astype(np.float64) * slope + intercept
    if window is None:
        return x, float(x.min()), float(x.max())
    c, w = window
    return x, c - w / 2.0, c + w / 2.0


def useful_window(
    image: np.ndarray, window: tuple[float, float] | None, slope: float = 1.0, intercept: float = 0.0, min_fraction: float = 0.05
) -> tuple[float, float] | None:
    """``window`` if at least ``min_fraction`` of the pixels fall inside it, else None (full range)."""
    if window is None:
        return None
    values, lo, hi = display(image, window, slope, intercept)
    return window if np.mean((values >= lo) & (values <= hi)) >= min_fraction else None


def visual_comparison(
    reference: np.ndarray,
    decoded: Mapping[str, tuple[np.ndarray, float]],
    stem: str | Path,
    *,
    crop: tuple[int, int, int] | None = None,
    window: tuple[float, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    bits_stored: int | None = None,
    title: str = "",
) -> list[Path]:
    """Original and each decoding (``label -> (image, bpp)``) with a zoomed crop below each.

    ``crop`` is (row, col, size); default: a square around the image's centre
    of intensity mass, a quarter of the shorter side. ``window`` is (center,
    width) in physical units (e.g. soft tissue for CT).
    """
    from matplotlib.patches import Rectangle

    h, w = reference.shape
    if crop is None:
        size = max(8, min(h, w) // 4)
        ys, xs = np.nonzero(reference > np.median(reference))
        cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (h // 2, w // 2)
        crop = (int(np.clip(cy - size // 2, 0, h - size)), int(np.clip(cx - size // 2, 0, w - size)), size)
    r0, c0, size = crop
    panels = [("original", reference, None)] + [(label, img, bpp) for label, (img, bpp) in decoded.items()]
    fig = _figure(figsize=(2.6 * len(panels), 5.6))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for k, (label, img, bpp) in enumerate(panels):
        values, vmin, vmax = display(img, window, slope, intercept)
        caption = label
        if bpp is not None:
            caption += f"\n{bpp:.3f} bpp"
            if bits_stored:
                caption += f", {psnr(reference, img, bits_stored):.1f} dB"
        for row, data in enumerate((values, values[r0 : r0 + size, c0 : c0 + size])):
            ax = axes[row][k]
            ax.imshow(data, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][k].set_title(caption, fontsize=8)
        axes[0][k].add_patch(Rectangle((c0, r0), size, size, fill=False, ec="yellow", lw=1))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(stem))


def nearest_points(rows: Sequence[Mapping[str, Any]], image_key: tuple[str, int], target_bpp: float) -> dict[str, str]:
    """For one image (file, slice): each codec's lossy point whose bpp is closest to ``target_bpp``."""
    best: dict[str, tuple[float, str]] = {}
    for r in rows:
        if (r["file"], r["slice"]) != image_key or r["error"] or r["lossless"]:
            continue
        gap = abs(np.log(max(float(r["bpp"]), 1e-9) / target_bpp))
        if r["codec"] not in best or gap < best[r["codec"]][0]:
            best[r["codec"]] = (gap, r["point"])
    return {codec: point for codec, (_, point) in best.items()}
