"""``medvae bd-rate results.json --anchor jpeg2000``: Bjøntegaard delta rates from a summary.

Negative numbers: the codec needs that many percent fewer bits than the anchor
for the same quality, averaged over the quality range both curves cover.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from medvae.evaluation.bdrate import bd_table
    from medvae.evaluation.run import merge_summaries, read_summary

    summary = merge_summaries([read_summary(r) for r in args.results])
    metrics = args.metric or ["psnr", "ms_ssim_db"]
    result = bd_table(summary, args.anchor, metrics, args.method)
    if args.json:
        print(json.dumps({"anchor": args.anchor, "method": args.method, "bd_rate_percent": result}, indent=1))
        return 0
    print(f"BD-rate (%, {args.method}) against {args.anchor} (negative = fewer bits at equal quality)")
    width = max([len(c) for c in result] + [5])
    print(f"{'codec':<{width}}  " + "  ".join(f"{m:>16}" for m in metrics))
    for codec, values in result.items():
        cells = [f"{v:>+16.2f}" if isinstance(v, float) else f"{'n/a':>16}" for v in values.values()]
        print(f"{codec:<{width}}  " + "  ".join(cells))
    notes = {f"{c} {m}: {v}" for c, vals in result.items() for m, v in vals.items() if not isinstance(v, float)}
    for note in sorted(notes):
        print(f"  n/a  {note}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bd-rate", help="Bjøntegaard delta rate between codecs in a results file", description=__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="summary.json written by evaluate (or its folder); several are merged")
    parser.add_argument("--anchor", required=True, help="codec the others are compared with, e.g. jpeg2000")
    parser.add_argument(
        "--metric", action="append", choices=("psnr", "ms_ssim_db", "psnr_soft_tissue", "psnr_lung", "psnr_bone"),
        help="quality axis (repeatable; default: psnr and ms_ssim_db)",
    )
    parser.add_argument(
        "--method", choices=("cubic", "pchip"), default="cubic",
        help="curve fit: cubic (VCEG-M33, 4+ points per curve) or pchip (piecewise cubic, 3+ points)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)
