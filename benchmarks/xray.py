#!/usr/bin/env python
"""X-ray: the learned variable-rate baseline RNN-Conv against MedVAE and JPEG 2000.

On the radiographs of the corpus test split and pydicom-data's other computed radiograph
(RG1_UNCR, 1955×1841, 15 bits; an evaluation reference, never trained on), and on corpus CT
test slices, codes every image with the shipped ``rnn-conv`` at each iteration count (one
progressive encoder run), the shipped MedVAE qualities and JPEG 2000, through
:func:`medvae.evaluation.run.evaluate` (real bytes, PSNR at the stored bit depth). BD-rates
are computed per image, over that image's own shared PSNR range, then averaged
(:func:`medvae.evaluation.bdrate.bd_rate_per_image`).

Writes ``benchmarks/results/xray.md`` (also into ``RESULTS.md``), ``xray.csv`` and the plots
``xray/rd_psnr_<image>.png``.

    python benchmarks/xray.py [--data MANIFEST.csv] [--ct-slices N] [--no-extra]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medvae.errors import InputError
from medvae.evaluation.bdrate import bd_rate_per_image
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import load_images
from medvae.evaluation.plots import rd_plot
from medvae.evaluation.run import evaluate, summarize, table, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
SPEC = ["rnn-conv", "medvae", "jpeg2000=0.05,0.1,0.2,0.35,0.5,0.75,1,1.5,2,3"]
PAIRS = (("jpeg2000", "rnn-conv"), ("jpeg2000", "medvae"), ("medvae", "rnn-conv"))
RADIOGRAPHS = ("CR", "DX")


def extra_radiographs() -> list:
    """pydicom-data's RG1_UNCR (CR, 15 bits), when that package is installed."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # pydicom-data absent and no network: the corpus radiograph alone
        path = None
    return load_images([path], modality="CR") if path else []


def bd_cells(rows: list[dict[str, Any]]) -> list[str]:
    cells = []
    for anchor, test in PAIRS:
        try:
            mean, used, skipped = bd_rate_per_image(rows, anchor, test, "psnr", "pchip")
            cells.append(f"{mean:+.1f} %" + (f" ({used} of {used + skipped})" if skipped else ""))
        except InputError:
            cells.append("no overlap")
    return cells


def image_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One row per radiograph and one for the CT slices together: per-image BD-rates, the PSNR range."""
    head = [f"{test} vs {anchor}" for anchor, test in PAIRS]
    lines = ["| images | " + " | ".join(head) + " | rnn-conv bpp (1 → 8 iterations) | rnn-conv PSNR | JPEG 2000 at the same bpp |",
             "|---|" + "---|" * (len(head) + 3)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = f"{Path(row['file']).name} ({row['modality']}, {row['height']}×{row['width']}, {row['bits_stored']} bits)" \
            if row["modality"] in RADIOGRAPHS else f"CT test slices ({row['height']}×{row['width']})"
        groups.setdefault(key, []).append(row)
    for key, mine in groups.items():
        rnn = sorted((r for r in mine if r["codec"] == "rnn-conv" and not r["error"]), key=lambda r: float(r["bpp"]))
        n = len({(r["file"], r["slice"]) for r in mine})
        bpp = f"{min(float(r['bpp']) for r in rnn):.3f} – {max(float(r['bpp']) for r in rnn):.3f}" if rnn else "–"
        quality = f"{min(float(r['psnr']) for r in rnn):.1f} – {max(float(r['psnr']) for r in rnn):.1f} dB" if rnn else "–"
        j2k = _interpolated(mine, "jpeg2000", [float(r["bpp"]) for r in rnn][:: max(1, len(rnn) - 1)])
        label = key if n == 1 else f"{key}, {n} slices"
        lines.append(f"| {label} | " + " | ".join(bd_cells(mine)) + f" | {bpp} | {quality} | {j2k} |")
    return lines


def _interpolated(rows: list[dict[str, Any]], codec: str, rates: list[float]) -> str:
    """The codec's mean PSNR at ``rates`` (linear in bpp over its own points, per image, averaged)."""
    import numpy as np

    per_image: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        if r["codec"] == codec and not r["error"]:
            per_image.setdefault((r["file"], r["slice"]), []).append((float(r["bpp"]), float(r["psnr"])))
    if not per_image or not rates:
        return "–"
    values = []
    for rate in rates:
        values.append(np.mean([np.interp(rate, *zip(*sorted(points))) for points in per_image.values()]))
    return " – ".join(f"{v:.1f} dB" for v in values)


def table_lines(images: list, rows: list[dict[str, Any]]) -> list[str]:
    """What the bit tables save: each image's file at every iteration against its raw bits, and
    against tables without the previous iteration's bit as context (real bytes both)."""
    import copy

    import medvae

    codec = medvae.load("rnn-conv")
    flat = copy.deepcopy(codec.model)  # the same weights and plan; each table pair merged
    tables = flat.bit_tables
    for counts in (tables.ones, tables.total):
        counts.copy_(counts.reshape(-1, 2).sum(dim=1, keepdim=True).expand(-1, 2).reshape(-1))
    tables.update()
    flat_codec = medvae.Codec(flat)
    k = codec.model.max_iterations
    lines = ["| image | raw bits, 8 iterations | static tables, no context | with the previous iteration's bit (shipped) |",
             "|---|---|---|---|"]
    for image in images:
        [coded] = [int(r["bytes"]) for r in rows
                   if r["file"] == image.file and r["slice"] == image.index and r["codec"] == "rnn-conv"
                   and str(r["value"]) == str(k) and not r["error"]]
        h, w = (-(-s // 16) * 16 for s in image.shape)
        raw = k * codec.model.bits * (h * w // 256) / 8
        no_context = len(flat_codec.compress(image.pixels, bits_stored=image.bits_stored))
        lines.append(f"| {Path(image.file).name} | {raw:,.0f} bytes | {no_context:,} ({no_context / raw:.0%}) | {coded:,} ({coded / raw:.0%}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--ct-slices", type=int, default=4, help="CT test slices, evenly spaced over the split (0: none)")
    parser.add_argument("--no-extra", action="store_true", help="only the corpus radiographs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    args = parser.parse_args(argv)
    images = [i for i in load_images([args.data], "test") if i.modality in RADIOGRAPHS]
    images += [] if args.no_extra else extra_radiographs()
    if args.ct_slices:
        ct = load_images([args.data], "test", modality="CT")
        images += [ct[round(i * (len(ct) - 1) / max(1, args.ct_slices - 1))] for i in range(min(len(ct), args.ct_slices))]
    if not images:
        raise SystemExit(f"{args.data}: no radiographs or CT slices in the test split")
    result = evaluate(images, expand(SPEC), meta={"split": "test"})
    out = args.out / "results"
    (out / "xray").mkdir(parents=True, exist_ok=True)
    write_csv(result.rows, out / "xray.csv")
    plots = []
    for image in images:
        if image.modality not in RADIOGRAPHS:
            continue
        stem = Path(image.file).stem
        mine = [r for r in result.rows if r["file"] == image.file]
        summary = summarize(mine, expand(SPEC), {}, 1)
        rd_plot(summary, "psnr", out / "xray" / f"rd_psnr_{stem}", title=f"{stem} ({image.modality}, {image.bits_stored} bits)")
        plots.append(f"![{stem}](results/xray/rd_psnr_{stem}.png)")
    lines = [
        "## X-ray: RNN-Conv against MedVAE and JPEG 2000 (`python benchmarks/xray.py`)",
        "",
        "RNN-Conv (`rnn-conv`, the shipped weights: a progressive ConvLSTM codec with multistage pooling, "
        "64 bits per 16×16 block per iteration, static bit tables; `configs/corpus-cpu-rnn-conv.yaml`) decoded after "
        "1 to 8 iterations of one encoder run; MedVAE at its shipped qualities; JPEG 2000 (OpenJPEG) over a bpp "
        "sweep. Real bytes; PSNR at the stored bit depth; BD-rate per image over its own shared PSNR range (PCHIP), "
        "then averaged; negative = fewer bits. Neither learned model saw a radiograph in training.",
        "",
        *plots,
        "",
        *image_lines(result.rows),
        "",
        "Entropy coding of the bits, measured on the same images (real bytes, container included): static "
        "tables counted on the training slices, per iteration and channel, against the same tables with the "
        "previous iteration's value of the bit as context.",
        "",
        *table_lines([i for i in images if i.modality in RADIOGRAPHS] + [i for i in images if i.modality not in RADIOGRAPHS][:1], result.rows),
        "",
        "<details><summary>Mean figures per rate point</summary>",
        "",
        table(result.summary, ("bpp", "psnr", "ms_ssim_db", "max_abs_error", "encode_s", "decode_s")),
        "",
        "</details>",
    ]
    text = "\n".join(lines)
    write_section("xray", text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
