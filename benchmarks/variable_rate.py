#!/usr/bin/env python
"""The variable-rate model against the ladder and JPEG 2000, and rate control's accuracy.

On the corpus test split (CT, MR and the radiograph), codes every image with the shipped
``medvae-vr`` at qualities 1 to 7, the ``medvae`` ladder (q1 to q7), near-lossless coding
(the ladder's default plus its residual layer, τ = 16, 8, 4, 2, 1) and JPEG 2000 over a bpp
sweep, through :func:`medvae.evaluation.run.evaluate` (real bytes, PSNR at the stored bit
depth). BD-rates against JPEG 2000 are computed per image over that image's shared PSNR
range, then averaged (:func:`medvae.evaluation.bdrate.bd_rate_per_image`), separately on the
points within 0.05–1 bpp and within 1–3 bpp (there, MedVAE's curve is ``medvae-vr`` continued by
near-lossless coding, as rate control uses them). Then rate control
(:func:`medvae.rate_control.compress_to` over ``medvae-vr``) is asked for ratios,
bpps and PSNRs on a few slices, and what it achieves is tabulated.

Writes ``benchmarks/results/variable_rate.md`` (also into ``RESULTS.md``), ``variable_rate.csv``
and the plots ``variable_rate/rd_psnr_<modality>.png``.

    python benchmarks/variable_rate.py [--ct-slices N] [--control-slices N] [--from-csv results/variable_rate.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from medvae import zoo
from medvae.errors import InputError
from medvae.evaluation.bdrate import bd_rate_per_image
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import load_images
from medvae.evaluation.plots import rate_control_plot, rd_plot
from medvae.evaluation.run import evaluate, summarize, table, write_csv
from medvae.rate_control import Ladder, Target, compress_to

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import details, publish_section  # noqa: E402
from xray import _typed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
SPEC = ["medvae-vr", "medvae", "medvae-residual=16,8,4,2,1", "jpeg2000=0.05,0.1,0.2,0.35,0.5,0.75,1,1.25,1.5,2,2.5,3,3.5"]
#: The curve of MedVAE above its lossy reach: the variable-rate model, then near-lossless coding.
COMBINED = "medvae-vr + near-lossless"  # as _in_band names it
BANDS = ((0.05, 1.0), (1.0, 3.0))
TARGETS = ("ratio=40", "ratio=20", "ratio=10", "bpp=0.05", "bpp=0.1", "bpp=0.5", "bpp=1", "bpp=2", "psnr=45", "psnr=50", "psnr=55", "psnr=60")


def _in_band(
    rows: list[dict[str, Any]], lo: float, hi: float, lossy: str = "medvae-vr", near: str = "medvae-residual",
) -> list[dict[str, Any]]:
    """The lossy rows whose rate lies in [lo, hi] bpp; ``lossy``'s and the near-lossless (``near``)
    points also as their combined curve, ``"<lossy> + near-lossless"``."""
    band = [r for r in rows if lo <= float(r["bpp"]) <= hi and not r["error"] and not r.get("lossless")]
    combined = [dict(r, codec=f"{lossy} + near-lossless") for r in band if r["codec"] in (lossy, near)]
    return band + combined


def _bd(rows: list[dict[str, Any]], test: str) -> str:
    try:
        mean, used, skipped = bd_rate_per_image(rows, "jpeg2000", test, "psnr", "pchip")
    except InputError:
        return "no image with two overlapping curves"
    return f"{mean:+.1f} % ({used} of {used + skipped} images)"


def _group(row: dict[str, Any]) -> str:
    return "X-ray" if row["modality"] in ("CR", "DX") else row["modality"]


def bd_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per modality and rate band: each learned curve's per-image BD-rate against JPEG 2000 (the
    lossy models below 1 bpp; above, the variable-rate model continued by near-lossless coding),
    and the variable-rate model's against the ladder."""
    lines = ["| modality | images | codec | BD-rate vs JPEG 2000, 0.05–1 bpp | BD-rate vs JPEG 2000, 1–3 bpp | highest PSNR (mean, dB) |",
             "|---|---|---|---|---|---|"]
    for group in ("CT", "MR", "X-ray"):
        mine = [r for r in rows if _group(r) == group]
        if not mine:
            continue
        n = len({(r["file"], r["slice"]) for r in mine})
        for codec, used in (("medvae-vr", BANDS[:1]), ("medvae", BANDS[:1]), (COMBINED, BANDS[1:])):
            bands = [_bd(_in_band(mine, lo, hi), codec) if (lo, hi) in used else "–" for lo, hi in BANDS]
            lines.append(f"| {group} | {n} | {codec} | {bands[0]} | {bands[1]} | {_highest(mine, codec)} |")
        versus = bd_rate_per_image(_in_band(mine, *BANDS[0]), "medvae", "medvae-vr", "psnr", "pchip")[0]
        lines.append(f"| {group} | {n} | medvae-vr against the ladder | {versus:+.1f} % | – | – |")
        lines.append(f"| {group} | {n} | jpeg2000 | – | – | {_highest(mine, 'jpeg2000')} |")
    return lines


def _highest(rows: list[dict[str, Any]], codec: str) -> str:
    """The highest PSNR of ``codec``'s lossy points, per image, averaged (– for near-lossless)."""
    if codec == COMBINED:
        return "– (bounded error)"
    best: dict[tuple, float] = {}
    for r in rows:
        if r["codec"] == codec and not r["error"] and not r.get("lossless"):
            key = (r["file"], r["slice"])
            best[key] = max(best.get(key, 0.0), float(r["psnr"]))
    return f"{np.mean(list(best.values())):.2f}" if best else "–"


def control_lines(images: list, targets: list[str], model: str = "medvae-vr", plot: Path | None = None) -> list[str]:
    """Rate control over the shipped ``model`` on ``images``: asked against achieved, per target
    (and, with ``plot``, the figure :func:`rate_control_plot` draws of it, at that stem)."""
    ladder = Ladder.shipped(model)
    figures = {}
    lines = ["| target | slices | settings chosen | achieved (min – max) | within 3 % of the target | contract kept | mean search s |",
             "|---|---|---|---|---|---|---|"]
    for spec in targets:
        name, value = spec.split("=")
        target = Target(**{name: float(value)})
        achieved, settings, kept, close, seconds = [], set(), 0, 0, []
        for image in images:
            start = time.perf_counter()
            try:
                choice = compress_to(image.pixels, target, ladder, bits_stored=image.bits_stored)
            except InputError as exc:
                settings.add(f"refused: {str(exc).split(': ', 1)[-1]}")
                continue
            seconds.append(time.perf_counter() - start)
            got = {"ratio": choice.ratio, "bpp": choice.bpp, "psnr": choice.psnr}[name]
            achieved.append(got)
            settings.add(choice.setting.split()[0] if choice.setting.startswith("quality") else choice.setting)
            kept += got <= float(value) + 1e-9 if name == "bpp" else got >= float(value) - 1e-9
            close += abs(got - float(value)) <= 0.03 * float(value) if name != "psnr" else True
        span = f"{min(achieved):.3f} – {max(achieved):.3f}" if achieved else "–"
        figures[target] = achieved
        near = f"{close} of {len(achieved)}" if name != "psnr" else "–"
        lines.append(f"| {target} | {len(images)} | {', '.join(sorted(settings))} | {span} | {near} | "
                     f"{kept} of {len(images)} | {np.mean(seconds) if seconds else 0:.1f} |")
    if plot is not None:
        rate_control_plot(figures, plot, title=f"Rate control over {model}: {len(images)} test slices, one dot each")
    return lines


def control_section(ct: list, others: list, n: int, targets: list[str], model: str, how: str, plot: Path) -> list[str]:
    """Rate control over ``model`` on ``n`` evenly taken CT slices and the MR ones, as report lines
    (``how``: what the search runs over, in words) and a plot at ``plot`` (a stem under
    ``benchmarks/results``); none when ``n`` is 0."""
    control = ct[:: max(1, len(ct) // n)][:n] + [i for i in others if i.modality == "MR"] if n else []
    if not control:
        return []
    return [
        f"Rate control over `{model}` ({how}), on {len(control)} test slices: ratio against the bits stored; PSNR "
        "at the bits stored. The contract: never above the asked bpp, never below the asked ratio or PSNR.",
        "",
        *control_lines(control, targets, model=model, plot=plot),
        "",
        f"![rate control](results/{plot.relative_to(plot.parents[1]).as_posix()}.png)",
        "",
    ]


def size_line() -> str:
    """The shipped weights' sizes: the package's, and the optional ladder package's."""
    files = sorted(zoo.WEIGHTS_DIR.glob("*.pt"))
    total = sum(f.stat().st_size for f in files)
    vr = zoo.shipped_path("medvae-vr")
    ladder = sum(zoo.shipped_path("medvae", q).stat().st_size for q in zoo.qualities("medvae"))
    return (f"Shipped weights: {total / 1e6:.1f} MB in the package ({len(files)} files); the variable-rate model "
            f"`{vr.name}` {vr.stat().st_size / 1e6:.1f} MB for every quality, the ladder it replaces "
            f"{ladder / 1e6:.1f} MB for {len(zoo.qualities('medvae'))} (all but q5 in the optional package medvae-ladder).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--ct-slices", type=int, default=0, help="CT test slices, evenly spaced (0: all)")
    parser.add_argument("--control-slices", type=int, default=3, help="CT slices rate control is measured on (and the MR; 0: none)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--from-csv", type=Path, default=None, help="resume: images of an earlier run's CSV are not coded again")
    args = parser.parse_args(argv)
    ct = load_images([args.data], "test", modality="CT")
    if args.ct_slices:
        ct = [ct[round(i * (len(ct) - 1) / max(1, args.ct_slices - 1))] for i in range(min(len(ct), args.ct_slices))]
    others = [i for i in load_images([args.data], "test") if i.modality != "CT"]
    images = ct + others
    if not images:
        raise SystemExit(f"{args.data}: no test images")
    codecs = expand(SPEC)
    rows = [_typed(r) for r in csv.DictReader(args.from_csv.open())] if args.from_csv else []
    done = {(r["file"], r["slice"]) for r in rows}
    todo = [i for i in images if (i.file, i.index) not in done]
    rows += evaluate(todo, codecs, meta={"split": "test"}).rows if todo else []
    result = SimpleNamespace(rows=rows, summary=summarize(rows, codecs, {"split": "test"}, len(images)))
    out = args.out / "results"
    (out / "variable_rate").mkdir(parents=True, exist_ok=True)
    write_csv(result.rows, out / "variable_rate.csv")
    plots = []
    for group in ("CT", "MR", "X-ray"):
        mine = [r for r in rows if _group(r) == group]
        if mine:
            n = len({(r["file"], r["slice"]) for r in mine})
            summary = summarize(mine, codecs, {}, n)
            rd_plot(summary, "psnr", out / "variable_rate" / f"rd_psnr_{group}", max_bpp=3.5,
                    codecs=["medvae-vr", "medvae", "medvae-residual", "jpeg2000"], title=f"{group} test split ({n} images, mean curves)")
            plots.append(f"![{group}](results/variable_rate/rd_psnr_{group}.png)")
    how = "`medvae.compress(image, ratio=R, model=\"medvae-vr\")`: its quality grid, then near-lossless coding"
    control_text = control_section(ct, others, args.control_slices, args.targets.split(","), "medvae-vr", how,
                                   out / "variable_rate" / "rate_control") or [
        "Rate control is measured over the default model (`medvae-ctx`) in the section of `benchmarks/context.py`; "
        "`--control-slices N` measures it over `medvae-vr` here.",
        "",
    ]
    lines = [
        "## Variable rate, rate control and the two rate bands (`python benchmarks/variable_rate.py`)",
        "",
        "`medvae-vr` is one set of weights (gain units; `configs/corpus-cpu-medvae-vr.yaml`) coded at qualities 1 to 7; "
        "`medvae` is the ladder of seven separately trained weights; `medvae-residual` is near-lossless coding "
        "(τ = 16, 8, 4, 2, 1) on the ladder's default. Real bytes; PSNR at the stored bit depth; BD-rate against "
        "JPEG 2000 per image over its own shared PSNR range (PCHIP), on the points within each band, then averaged; "
        "negative = fewer bits. The plots average curves across images for display only.",
        "",
        *plots,
        "",
        *bd_lines(rows),
        "",
        *control_text,
        size_line(),
        "",
        *details("Mean figures per rate point", table(result.summary, ("bpp", "psnr", "ms_ssim_db", "encode_s", "decode_s"))),
    ]
    return publish_section("variable_rate", lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
