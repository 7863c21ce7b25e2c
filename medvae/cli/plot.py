"""``medvae plot results.json``: R-D curves (bpp vs PSNR, MS-SSIM dB ...) as PNG and SVG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from medvae.evaluation import plots
    from medvae.evaluation.run import merge_summaries, read_summary

    summary = merge_summaries([read_summary(r) for r in args.results])
    results = Path(args.results[0])
    out = args.out or (results if results.is_dir() else results.parent)
    if args.metric:
        paths = []
        for metric in args.metric:
            paths += plots.rd_plot(summary, metric, out / f"rd_{metric}", codecs=args.codecs, max_bpp=args.max_bpp)
    else:
        paths = plots.plot_summary(summary, out, max_bpp=args.max_bpp)
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="draw R-D curves from a results file", description=__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="summary.json written by evaluate (or its folder); several are merged")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: next to the first results file)")
    parser.add_argument(
        "--metric", action="append",
        choices=("psnr", "ms_ssim_db", "ms_ssim", "psnr_soft_tissue", "psnr_lung", "psnr_bone"),
        help="quality axis (repeatable; default: psnr, ms_ssim_db and the CT windows when present)",
    )
    parser.add_argument("--codecs", nargs="+", default=None, help="only these codecs")
    parser.add_argument("--max-bpp", type=float, default=None, help="clip the rate axis")
    parser.set_defaults(func=run)
