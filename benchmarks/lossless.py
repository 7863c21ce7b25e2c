#!/usr/bin/env python
"""Lossless and near-lossless: MedVAE's residual layer against every lossless anchor.

On the corpus test split (CT and MR), every slice is coded by ``medvae-residual`` at
τ = 0, 1, 2, 4, 8 (the shipped default base plus its residual layer), by ``medvae-series``
(the same, but each slice of a series other than its key slices given its neighbours towards
the key slice: the series residual model; slices without a series are coded alone), by JPEG-LS at
NEAR = τ, and losslessly by JPEG 2000 (reversible 5/3), JPEG-XL (effort 7), lossless JPEG
(process 14, SV1), DICOM RLE Lossless and HTJ2K. Everything goes through
:func:`medvae.evaluation.run.evaluate` (real bytes, header included; the decoded image's
max error is measured, and a lossless claim that changed a pixel stops the run).

Writes ``benchmarks/results/lossless.md`` (the tables: mean bpp per τ × codec, measured
max error, PSNR, time per slice), ``lossless.csv`` (one row per slice × point), the plot
``lossless_bpp.png/.svg`` (bpp against τ), and the same section into ``benchmarks/RESULTS.md``.

    python benchmarks/lossless.py [--modality CT] [--limit N] [--max-error 0,1,2,4,8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import group_series, load_images
from medvae.evaluation.run import evaluate, write_csv
from medvae.series import CHAIN, coding_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import publish_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
LOSSLESS_ANCHORS = ("jpegxl", "jpeg2000", "jpeg", "rle", "htj2k")
#: MedVAE's two ways of coding with a bound: each slice alone, and a series slice by slice.
MEDVAE = ("medvae-residual", "medvae-series")


def spec(bounds: list[int]) -> list[str]:
    """The ``--codecs`` spec of this benchmark."""
    return [
        *(f"{family}=" + ",".join(map(str, bounds)) for family in MEDVAE),
        "jpegls=" + ",".join(map(str, bounds)),
        *(f"{name}=lossless" for name in LOSSLESS_ANCHORS if name not in ("rle", "htj2k")),
        "rle", "htj2k",
    ]


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "") and np.isfinite(float(r[key]))]
    return float(np.mean(values)) if values else float("nan")


def _per_point(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    points: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        points.setdefault(r["point"], []).append(r)
    return points


def tables(rows: list[dict[str, Any]], bounds: list[int], modality: str) -> list[str]:
    """Markdown: bpp per τ × codec, then the detail per point."""
    points = _per_point(rows)
    n = len({(r["file"], r["slice"]) for r in rows})
    mv = lambda family, t: points.get(f"{family}[lossless]" if t == 0 else f"{family}[max_error={t}]", [])  # noqa: E731
    ls = lambda t: points.get("jpegls[lossless]" if t == 0 else f"jpegls[near={t}]", [])  # noqa: E731
    change = lambda a, b: f"{100 * (a / b - 1):+.1f} %" if np.isfinite(a) and np.isfinite(b) else ""  # noqa: E731
    lines = [
        f"### {modality}: {n} test slices",
        "",
        "| τ | " + " | ".join(f"{f} bpp" for f in MEDVAE) + " | JPEG-LS NEAR=τ bpp | "
        + " | ".join(f"{f} vs JPEG-LS" for f in MEDVAE) + " | "
        + " | ".join(f"{a} bpp" for a in LOSSLESS_ANCHORS) + " | " + " | ".join(f"{f} vs JPEG-XL" for f in MEDVAE) + " |",
        "|---|" + "---|" * (3 * len(MEDVAE) + 1 + len(LOSSLESS_ANCHORS)),
    ]
    for t in bounds:
        ours, j = [_mean(mv(f, t), "bpp") for f in MEDVAE], _mean(ls(t), "bpp")
        anchors = [_mean(points.get(f"{a}[lossless]", []), "bpp") if t == 0 else float("nan") for a in LOSSLESS_ANCHORS]
        cells = [f"{v:.3f}" if np.isfinite(v) else "" for v in [*ours, j]]
        lines.append(
            f"| {t} | " + " | ".join(cells) + " | " + " | ".join(change(m, j) for m in ours) + " | "
            + " | ".join(f"{v:.3f}" if np.isfinite(v) else "" for v in anchors) + " | "
            + " | ".join(change(m, anchors[0]) for m in ours) + " |"
        )
    lines += [
        "",
        "| point | slices | mean bpp | max error (largest over slices) | mean PSNR | encode s | decode s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, prow in points.items():
        errors = [r for r in prow if r.get("error")]
        good = [r for r in prow if not r.get("error")]
        psnr = _mean(good, "psnr")
        lines.append(
            f"| {label} | {len(good)}{f' ({len(errors)} failed)' if errors else ''} | {_mean(good, 'bpp'):.3f} | "
            f"{max(int(r['max_abs_error']) for r in good) if good else ''} | {'exact' if not np.isfinite(psnr) else f'{psnr:.2f}'} | "
            f"{_mean(good, 'encode_s'):.2f} | {_mean(good, 'decode_s'):.2f} |"
        )
    return lines


def plot(results: dict[str, list[dict[str, Any]]], bounds: list[int], path: Path) -> None:
    """bpp against τ: medvae-residual and JPEG-LS as lines, the lossless anchors as markers at τ = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (modality, rows) in zip(axes[0], results.items()):
        points = _per_point(rows)
        for family, style in (("medvae-residual", "o-"), ("medvae-series", "D-"), ("jpegls", "s--")):
            ys = [_mean(points.get(f"{family}[lossless]" if t == 0 else
                                   f"{family}[{'near' if family == 'jpegls' else 'max_error'}={t}]", []), "bpp") for t in bounds]
            ax.plot(bounds, ys, style, label=family if family != "jpegls" else "JPEG-LS NEAR=τ")
        for k, anchor in enumerate(LOSSLESS_ANCHORS):
            value = _mean(points.get(f"{anchor}[lossless]", []), "bpp")
            ax.plot([0], [value], marker="v^<>d"[k], linestyle="none", label=f"{anchor} lossless")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(bounds, [str(t) for t in bounds])
        ax.set_xlabel("max error τ (0 = lossless)")
        ax.set_ylabel("bits per pixel (real bytes)")
        ax.set_title(f"{modality} test split: bpp against the error bound")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(path.with_suffix(suffix), dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--modality", action="append", help="default: CT and MR")
    parser.add_argument("--limit", type=int, default=None, help="slices per modality (evenly spaced)")
    parser.add_argument("--max-error", default="0,1,2,4,8", help="error bounds τ")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    args = parser.parse_args(argv)
    bounds = [int(t) for t in args.max_error.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    following: dict[str, int] = {}  # slices coded given a neighbour, per modality
    for modality in args.modality or ["CT", "MR"]:
        images = load_images([args.data], "test", modality=modality)
        if args.limit and len(images) > args.limit:
            images = [images[i] for i in np.linspace(0, len(images) - 1, args.limit).round().astype(int)]
        series = group_series(images)
        results[modality] = evaluate(images, expand(spec(bounds)), series=series).rows
        following[modality] = sum(reference is not None for g in series for _, reference in coding_plan(len(g), CHAIN))
    out = args.out / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_csv([r for rows in results.values() for r in rows], out / "lossless.csv")
    plot(results, bounds, out / "lossless_bpp")
    lines = [
        "## Lossless and near-lossless (`python benchmarks/lossless.py`)",
        "",
        "Real bytes per slice, header included; max error measured on the decoded integers. "
        "medvae-residual is the shipped default base plus its residual layer (`medvae.residual`); "
        "medvae-series the same with each slice of a series but its key slices coded given its two neighbours "
        "towards the key slice (`Codec.compress_series`, the series residual model: its files decode only after those), "
        + ", ".join(f"{count} {modality} slices so" for modality, count in following.items())
        + f"; the others (single slices, and a series' key slices, one in the middle of every {2 * CHAIN + 1}, so a slice "
        f"decodes after at most {CHAIN} others) are coded alone, as "
        "medvae-residual codes them. Every other codec codes each slice alone.",
        "",
        "![bpp against the error bound](results/lossless_bpp.png)",
        "",
    ]
    for modality, rows in results.items():
        lines += [*tables(rows, bounds, modality), ""]
    return publish_section("lossless", lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
