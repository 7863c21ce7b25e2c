#!/usr/bin/env python
"""The context model (``medvae-ctx``) against ``medvae-vr``, the ladder and JPEG 2000, and its fusion ablation.

On the test split of the corpus with its training extras (``tools/fetch_samples.py``: CT, MR,
and the radiographs RG3 and a chest localizer; the plain corpus when the extras are absent),
codes every image with the shipped ``medvae-ctx`` (its encoder choosing per image between its two
weights) and, alone, its first weights (:data:`ONE_WEIGHTS`), and ``medvae-vr``, at qualities 1 to 7, the
``medvae`` ladder (q1 to q7) and JPEG 2000 over a bpp sweep (real bytes, PSNR at the stored bit
depth), plus ``medvae-ctx`` with its residual skip-fusion switched off (the fusion's last
convolution zeroed, so ``ŷ_f = ŷ``, and the exact plan calibrated again): an inference-time
ablation of what the fusion contributes to the trained model, not a model trained without it.
BD-rates are per image, over each image's shared PSNR range (PCHIP), on the points within
0.05–1 bpp, then averaged (:func:`medvae.evaluation.bdrate.bd_rate_per_image`).

Writes ``benchmarks/results/context.md`` (also into ``RESULTS.md``), ``context.csv`` and the plots
``context/rd_psnr_<modality>.png``; then rate control over the default model (``medvae-ctx``, then
near-lossless coding) is asked for ratios, bpps and PSNRs on a few slices, as in ``variable_rate.py``.

    python benchmarks/context.py [--ct-slices N] [--control-slices N] [--from-csv benchmarks/results/context.csv benchmarks/results/variable_rate.csv] [--recode medvae-optimized]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import medvae
from medvae import zoo
from medvae.checkpoint import load_model, save_model
from medvae.evaluation.bdrate import bd_rate_cell
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import load_images
from medvae.evaluation.learned import Learned
from medvae.evaluation.plots import rd_plot
from medvae.evaluation.run import evaluate, summarize, table, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import details, publish_section  # noqa: E402
from variable_rate import TARGETS, _group, _highest, _in_band, control_section  # noqa: E402
from xray import _typed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared/data"
#: Rate control's near-lossless coding above the lossy reach: optimized files (formats 18–20).
NEAR = "medvae-optimized"
SPEC = ["medvae-ctx", "medvae-vr", "medvae", f"{NEAR}=16,8,4,2,1",
        "jpeg2000=0.05,0.1,0.2,0.35,0.5,0.75,1,1.25,1.5,2,2.5,3,3.5"]
#: The default's curve above its lossy reach (rate control's): medvae-ctx, then near-lossless coding.
COMBINED = "medvae-ctx + near-lossless"
NO_FUSION = "medvae-ctx without fusion"
#: The shipped ``medvae-ctx`` whose files carry no correction of the reconstruction (:mod:`medvae.correction`).
NO_CORRECTION = "medvae-ctx without correction"
#: The shipped ``medvae-ctx``'s first weights (128² crops) alone, without its alternative (256² crops).
ONE_WEIGHTS = "medvae-ctx 128² weights only"
BAND = (0.05, 1.0)
HIGH_BAND = (1.0, 3.0)
#: (test, reference) pairs of the table, per modality.
COMPARISONS = (("medvae-ctx", "jpeg2000"), ("medvae-vr", "jpeg2000"), ("medvae", "jpeg2000"),
               ("medvae-ctx", "medvae-vr"), ("medvae-ctx", "medvae"), ("medvae-ctx", NO_CORRECTION), (NO_CORRECTION, ONE_WEIGHTS),
               (NO_FUSION, ONE_WEIGHTS))


def without_correction() -> list[Learned]:
    """The shipped ``medvae-ctx`` with its files' correction off, at every integer quality, under the
    curve name :data:`NO_CORRECTION`: what the correction (:mod:`medvae.correction`) gains."""
    codec = medvae.load("medvae-ctx", correction=False)
    return [Learned(codec, NO_CORRECTION, f"q{q}", quality=float(q)) for q in range(1, codec.model.levels + 1)]


def one_weights() -> list[Learned]:
    """The shipped ``medvae-ctx``'s first weights alone, without the correction, at every integer quality,
    under the curve name :data:`ONE_WEIGHTS`: against :data:`NO_CORRECTION`, what choosing between its
    weights per image gains."""
    codec = medvae.load("medvae-ctx", correction=False)
    codec.alternatives = ()
    return [Learned(codec, ONE_WEIGHTS, f"q{q}", quality=float(q)) for q in range(1, codec.model.levels + 1)]


def without_fusion(calibration: list) -> list[Learned]:
    """The shipped ``medvae-ctx``'s first weights with the fusion's output zeroed (``ŷ_f = ŷ``), calibrated again,
    at every integer quality, under the curve name :data:`NO_FUSION`."""
    model = load_model(zoo.shipped_path("medvae-ctx"))
    with torch.no_grad():
        last = model.fusion.body[-1]
        last.weight.zero_()
        last.bias.zero_()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "no-fusion.pt"
        save_model(model, path, calibration=calibration)
        codec = medvae.load(path, correction=False)
    return [Learned(codec, NO_FUSION, f"q{q}", quality=float(q)) for q in range(1, codec.model.levels + 1)]


def _bd(rows: list[dict[str, Any]], test: str, reference: str) -> str:
    return bd_rate_cell(rows, reference, test, BAND)


def _bd_high(rows: list[dict[str, Any]]) -> str:
    """Per-image BD-rate of :data:`COMBINED` against JPEG 2000 on the points within 1–3 bpp."""
    return bd_rate_cell(_in_band(rows, *HIGH_BAND, lossy="medvae-ctx", near=NEAR), "jpeg2000", COMBINED)


def bd_lines(rows: list[dict[str, Any]]) -> list[str]:
    header = " | ".join(f"{t} vs {r}" for t, r in COMPARISONS)
    lines = [f"| modality | images | {header} | {COMBINED} vs jpeg2000, 1–3 bpp | highest PSNR ctx / vr / ladder / J2K (dB) |",
             "|---|---|" + "---|" * len(COMPARISONS) + "---|---|"]
    for group in ("CT", "MR", "X-ray"):
        mine = [r for r in rows if _group(r) == group]
        if mine:
            n = len({(r["file"], r["slice"]) for r in mine})
            cells = " | ".join(_bd(mine, t, r) for t, r in COMPARISONS)
            peaks = " / ".join(_highest(mine, c) for c in ("medvae-ctx", "medvae-vr", "medvae", "jpeg2000"))
            lines.append(f"| {group} | {n} | {cells} | {_bd_high(mine)} | {peaks} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    plus = CORPUS / "corpus-plus/MANIFEST.csv"
    parser.add_argument("--data", type=Path, default=plus if plus.is_file() else CORPUS / "corpus/MANIFEST.csv")
    parser.add_argument("--ct-slices", type=int, default=0, help="CT test slices, evenly spaced (0: all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--control-slices", type=int, default=3, help="CT slices rate control is measured on (and the MR; 0: none)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--from-csv", type=Path, nargs="+", default=[],
                        help="reuse earlier runs' rows (this script's, variable_rate.csv): (image, point) pairs there are not coded again")
    parser.add_argument("--recode", action="append", default=[], metavar="CODEC",
                        help="code this codec's points again although --from-csv has them (medvae-optimized after a new residual model)")
    args = parser.parse_args(argv)
    ct = load_images([args.data], "test", modality="CT")
    if args.ct_slices:
        ct = [ct[round(i * (len(ct) - 1) / max(1, args.ct_slices - 1))] for i in range(min(len(ct), args.ct_slices))]
    images = ct + [i for i in load_images([args.data], "test") if i.modality != "CT"]
    if not images:
        raise SystemExit(f"{args.data}: no test images")
    codecs = expand(SPEC) + without_correction() + one_weights() + without_fusion([s.pixels for s in load_images([args.data], "train", max_slices=2)])
    names = {c.family for c in codecs}
    # Earlier rows are matched to these images by file name and slice (the corpus and the
    # corpus with extras hold the same files in different folders), then take their paths.
    here = {(Path(i.file).name, i.index): i.file for i in images}
    rows, done = [], set()
    for r in (_typed(row) for path in args.from_csv for row in csv.DictReader(path.open())):
        key = (Path(r["file"]).name, int(r["slice"]))
        if r["codec"] in names - set(args.recode) and key in here and (key, r["point"]) not in done:
            done.add((key, r["point"]))
            rows.append(dict(r, file=here[key]))
    for image in images:
        todo = [c for c in codecs if ((Path(image.file).name, image.index), c.label) not in done]
        rows += evaluate([image], todo, meta={"split": "test"}, progress=False).rows if todo else []
        print(f"{Path(image.file).name} slice {image.index}: {len(todo)} points coded", flush=True)
    out = args.out / "results"
    (out / "context").mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "context.csv")
    plots = []
    for group in ("CT", "MR", "X-ray"):
        mine = [r for r in rows if _group(r) == group]
        if mine:
            n = len({(r["file"], r["slice"]) for r in mine})
            rd_plot(summarize(mine, codecs, {}, n), "psnr", out / "context" / f"rd_psnr_{group}", max_bpp=1.6,
                    codecs=["medvae-ctx", NO_CORRECTION, ONE_WEIGHTS, "medvae-vr", "medvae", "jpeg2000", NO_FUSION], title=f"{group} test split ({n} images, mean curves)")
            plots.append(f"![{group}](results/context/rd_psnr_{group}.png)")
    summary = SimpleNamespace(rows=rows, summary=summarize(rows, codecs, {"split": "test"}, len(images)))
    how = ("the default: `medvae.compress(image, ratio=R)`, `medvae compress --ratio R`; its quality grid, then "
           "near-lossless coding on the ladder's default")
    control_text = control_section(ct, images, args.control_slices, args.targets.split(","), "medvae-ctx", how,
                                   out / "context" / "rate_control")
    lines = [
        "## The context model `medvae-ctx` (`python benchmarks/context.py`)",
        "",
        "`medvae-ctx` is `medvae-vr` with a mean-scale hyperprior and a checkerboard context, decoded exactly in "
        "two passes, with two weights: the first trained on 128² crops of CT, MR and radiographs "
        "(`configs/corpus-cpu-medvae-ctx.yaml`), the alternative continued from it on 256² crops "
        "(`configs/corpus-cpu-medvae-ctx-256.yaml`); its encoder codes each image with both and keeps the file of "
        "lower rate–distortion cost; each file carries a correction of the reconstruction that the encoder fits "
        f"and every decoder applies (`medvae.correction`, format 11). `{NO_CORRECTION}`: the same without it "
        f"(format 6). `{ONE_WEIGHTS}`: the first weights alone, without the correction. `medvae-vr` the "
        "variable-rate model (with the correction); `medvae` the ladder of seven weights. "
        f"`{NO_FUSION}`: the first weights with the residual skip-fusion's output zeroed (an inference-time "
        "ablation, without the correction). "
        f"Test split of `{args.data.parent.name}`. Real bytes; PSNR at the stored bit depth; BD-rate per image over "
        f"its own shared PSNR range (PCHIP) on the points within {BAND[0]}–{BAND[1]} bpp, then averaged; negative = "
        "fewer bits than the reference; (n of m): images with two overlapping curves. "
        f"`{COMBINED}`, 1–3 bpp: `medvae-ctx` continued by optimized near-lossless coding on the ladder's default "
        f"(`{NEAR}`, quantizer bound τ = 16, 8, 4, 2, 1; `benchmarks/optimized.py`), the curve rate control follows "
        "above the lossy reach.",
        "",
        *plots,
        "",
        *bd_lines(rows),
        "",
        *control_text,
        *details("Mean figures per rate point", table(summary.summary, ("bpp", "psnr", "encode_s", "decode_s"))),
    ]
    return publish_section("context", lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
