"""``medvae evaluate`` (and ``evaluate.py``): codecs × rate points over a dataset.

Writes ``per_image.csv``, ``summary.json``, the R-D plots (``rd_*.png/.svg``)
and a visual comparison of one slice at matched bpp (``visual.png/.svg``).

Example::

    medvae evaluate --data ../shared/data/corpus/MANIFEST.csv --split test --modality CT \\
        --codecs jpeg2000,jpegxl,jpegls,jpeg,spiht,coiflet,medvae=runs/a/best.pt --out results/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medvae.cli.common import add_refine_arguments, refine_steps
from medvae.errors import InputError

DEFAULT_CODECS = "jpeg2000,jpegxl,jpegls,jpeg,spiht,coiflet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate.py`` and ``medvae evaluate``."""
    parser.add_argument("--data", nargs="+", required=True, metavar="SOURCE", help="manifest CSV, folder(s) or image file(s)")
    parser.add_argument("--split", default=None, help="manifest split (train/val/test); default: all")
    parser.add_argument("--modality", default=None, help="keep one modality (CT, MR, CR ...)")
    parser.add_argument(
        "--codecs", action="append", default=None, metavar="SPEC",
        help=f"codecs and rate points, e.g. 'jpeg2000,jpegls=0,2,medvae=ckpt.pt' (default: {DEFAULT_CODECS}); "
        "repeatable; see docs/evaluation.md",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many slices")
    parser.add_argument("--max-slices", type=int, default=None, help="at most this many (evenly spaced) slices per volume")
    parser.add_argument("--visual-bpp", type=float, default=0.5, help="target bpp of the visual comparison (default 0.5)")
    parser.add_argument("--visual-image", type=int, default=0, help="index of the slice shown in the visual comparison")
    parser.add_argument(
        "--series", action="store_true",
        help="evaluate whole series (a folder of slices, a volume, a multi-frame DICOM): series codecs (x264, x265) "
        "code each series as one stream, the others each slice; every slice of each volume is kept unless --max-slices",
    )
    parser.add_argument("--no-plots", action="store_true", help="write the CSV and JSON only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for coding: its speed, never its bytes or pixels (default: torch's choice)")
    add_refine_arguments(parser)


def refine(points: list, steps: int) -> None:
    """Make the learned points refine their latents (curves named ``<family> (refined)``)."""
    for point in points:
        if not point.learned:
            continue
        if point.codec.lmbda is None:
            raise InputError(f"{point.label}: the weights record no MSE-loss lambda, which --refine aims at")
        point.refine_steps = steps
        point.family = f"{point.family} (refined)"


def run(args: argparse.Namespace) -> int:
    from medvae.evaluation import codecs as registry
    from medvae.evaluation import datasets, plots
    from medvae.evaluation import run as runner
    from medvae.metrics import CT_WINDOWS

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    steps = refine_steps(args)
    points = registry.expand(args.codecs or [DEFAULT_CODECS])
    if steps:
        refine(points, steps)
    images = datasets.load_images(args.data, args.split, modality=args.modality, max_slices=args.max_slices, limit=args.limit)
    if not 0 <= args.visual_image < len(images):
        raise InputError(f"--visual-image {args.visual_image} is out of range (0..{len(images) - 1})")
    meta = runner.run_metadata(
        data=[str(d) for d in args.data], split=args.split, modality=args.modality,
        codecs=args.codecs or [DEFAULT_CODECS], refine_steps=steps, command=" ".join(sys.argv),
        images=[f"{im.file}#{im.index}" for im in images],
        bits_stored=sorted({im.bits_stored for im in images}),
        modalities=sorted({im.modality for im in images}),
    )
    series = datasets.group_series(images) if args.series else None
    if series is not None:
        meta["series"] = [[f"{images[i].file}#{images[i].index}" for i in group] for group in series]
    elif any(getattr(point, "series", False) for point in points):
        print("note: without --series, video codecs code each slice as a one-frame stream", file=sys.stderr)
    print(f"evaluating {len(points)} rate points on {len(images)} slices"
          + (f" in {len(series)} series" if series is not None else ""), file=sys.stderr)
    result = runner.evaluate(
        images, points, progress=not args.no_progress, keep=None if args.no_plots else args.visual_image, meta=meta, series=series,
    )
    out: Path = args.out
    written = [runner.write_csv(result.rows, out / "per_image.csv"), runner.write_summary(result.summary, out / "summary.json")]
    if not args.no_plots:
        written += plots.plot_summary(result.summary, out)
        shown = images[args.visual_image]
        chosen = plots.nearest_points(result.rows, (shown.file, shown.index), args.visual_bpp)
        decoded = {point: result.decoded[point] for point in chosen.values() if point in result.decoded}
        if decoded:
            window = plots.useful_window(shown.pixels, CT_WINDOWS["soft_tissue"] if shown.modality == "CT" else None, shown.slope, shown.intercept)
            written += plots.visual_comparison(
                shown.pixels, decoded, out / "visual", window=window, slope=shown.slope, intercept=shown.intercept,
                bits_stored=shown.bits_stored, title=f"{shown.file} slice {shown.index}, target {args.visual_bpp} bpp",
            )
    print(runner.table(result.summary))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="R-D evaluation of codecs on a dataset", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
