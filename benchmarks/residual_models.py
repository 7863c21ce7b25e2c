#!/usr/bin/env python
"""Residual model files side by side, before one is shipped: real bytes and coding time.

Each model is put on the shipped default base (``medvae.load("medvae")``) and codes every
n-th test slice of the corpus at each bound τ through ``Codec.compress`` and
``Codec.decompress`` (the library's one path, through the evaluation's ``medvae-residual``
points); the decoded error is checked against τ on
every slice. Prints one line per model: mean bpp per τ, mean encode and decode seconds.

    python benchmarks/residual_models.py runs/residual/a.pt runs/residual/b.pt [--every 3] [--max-error 0,1,2,4,8]

With no file, the shipped residual model alone; ``--quality Q`` puts the models on the ladder's
quality Q instead of the shipped base (the residual models were trained on the shipped one).
``--series``: the files are series models, coding each test series given the slice before
(``medvae-series``, :class:`SeriesWithResidual`; the default ``--every`` is then 1, whole series).
``--refine-steps N``: each base refined first (``Codec.compress(refine_steps=N)``, ``medvae compress --refine``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import medvae
from medvae.evaluation.datasets import group_series
from medvae.evaluation.learned import SeriesWithResidual, WithResidual
from medvae.evaluation.run import evaluate
from medvae.io.slices import Slice, manifest_slices
from medvae.residual.weights import load_residual

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"


def measure(
    codec: medvae.Codec, slices: list[Slice], bounds: list[int], family: type[WithResidual] = WithResidual, refine_steps: int = 0
) -> tuple[dict[int, float], float, float]:
    """Mean bpp per bound, mean encode and decode seconds, over ``slices``, from the evaluation
    rows of ``codec`` with its residual layer at each bound (``family``: :class:`WithResidual`,
    or :class:`SeriesWithResidual`); stops on a slice the codec refused or decoded beyond its bound."""
    series = group_series(slices) if getattr(family, "series", False) else None  # a series codec codes each series as one stream
    rows = evaluate(slices, [family(codec, t, refine_steps) for t in bounds], progress=False, series=series).rows
    for row in rows:
        if row["error"] or row["max_abs_error"] > row["value"]:
            problem = row["error"] or f"max error {row['max_abs_error']} above the bound {row['value']}"
            raise SystemExit(f"{row['file']} slice {row['slice']}: {problem}")
    bpp = {t: float(np.mean([r["bpp"] for r in rows if r["value"] == t])) for t in bounds}
    return bpp, float(np.mean([r["encode_s"] for r in rows])), float(np.mean([r["decode_s"] for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, help="residual model files (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--every", type=int, help="every n-th test slice (default 3; 1 with --series)")
    parser.add_argument("--series", action="store_true", help="the files are series models (medvae-series)")
    parser.add_argument("--max-error", default="0,1,2,4,8", help="error bounds τ")
    parser.add_argument("--quality", type=int, help="another quality of the ladder as the base (default: the shipped base)")
    parser.add_argument("--refine-steps", type=int, default=0, help="refine each base with this many steps first (default 0)")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no corpus manifest (see README: Data)")
    bounds = [int(t) for t in args.max_error.split(",")]
    every = args.every or (1 if args.series else 3)
    slices = [s for s in manifest_slices(args.data, split="test") if s.modality == args.modality][::every]
    codec = medvae.load("medvae")
    slot = "series_residual" if args.series else "residual"
    shipped = getattr(codec, slot)
    if args.quality:
        default, codec = codec, medvae.load("medvae", args.quality)
        codec.residual, codec.series_residual = default.residual, default.series_residual  # key slices too
    for path in args.models or [None]:
        setattr(codec, slot, shipped if path is None else load_residual(path))
        bpp, encode, decode = measure(codec, slices, bounds, SeriesWithResidual if args.series else WithResidual, args.refine_steps)
        points = "  ".join(f"τ={t}: {v:.3f}" for t, v in bpp.items())
        base = (f", base q{args.quality}" if args.quality else "") + (f", refined {args.refine_steps} steps" if args.refine_steps else "")
        print(f"{path or 'shipped'} ({getattr(codec, slot).fingerprint[:8]}{base}, {len(slices)} {args.modality} slices)  {points}  "
              f"encode {encode:.2f} s  decode {decode:.2f} s", flush=True)


if __name__ == "__main__":
    main()
