#!/usr/bin/env python
"""Where the lossless bits go: the residual layer's four passes, and the base, per CT test slice.

The shipped default base (``medvae`` q5) codes each slice of the corpus test split; the residual
model's estimate of each pass's bits (:func:`medvae.residual.model.pass_bits`, the coder's cost,
escapes included) is printed per pixel of the slice, next to the base's real bits per pixel. The
first pass sees no decoded neighbour and the last sees eight, so the spread says what a finer
pass schedule could gain.

``--law`` also asks what a better law could gain with the same network: the cost with every
scale multiplied by 2^±0.1 and 2^±0.2 (is the network calibrated?), and the empirical entropy
of the errors within each table (quarter-octave bins of the scale, the coder's resolution),
fitted to the very slices measured: no law indexed by these scales codes them in fewer bits;
and the same for the pixels away from their bounds alone, where the bounded law is the Laplace.

``--max-error T``: the same near-losslessly (symbols in units of 2T + 1, later passes reading
the residuals as decoded); ``--residual FILE``: another residual model than the shipped one.

    python benchmarks/residual_passes.py [--modality CT] [--every 3] [--law] [--max-error T] [--residual FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.io.slices import manifest_slices
from medvae.residual.model import symbol_bits, pass_laws, slice_tensors
from medvae.residual.tables import STEPS
from medvae.residual.weights import load_residual

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--every", type=int, default=3, help="every n-th test slice")
    parser.add_argument("--law", action="store_true", help="also the cost of other laws for the same network")
    parser.add_argument("--max-error", type=int, default=0, help="error bound τ (default 0: lossless)")
    parser.add_argument("--residual", type=Path, help="residual model file (default: the shipped one)")
    args = parser.parse_args(argv)
    if not MANIFEST.is_file():
        raise SystemExit(f"{MANIFEST}: the corpus is not here")
    slices = [s for s in manifest_slices(MANIFEST, split="test") if s.modality == args.modality][:: args.every]
    codec = medvae.load("medvae")
    residual = load_residual(args.residual) if args.residual else codec.residual
    model = residual.model.eval()
    rows, laws_seen = [], []
    for s in slices:
        data, base = codec.compress_with_pixels(s.pixels)  # the base's file and what it decodes to
        image, base_t, lo, hi = slice_tensors(s.pixels, base, medvae.read_header(data).value_range)
        with torch.no_grad():
            laws = list(pass_laws(model, image, base_t, lo, hi, max_error=args.max_error))
        passes = [float(symbol_bits(*law).sum()) / (image.numel() / 4) for law in laws]  # each pass codes a quarter
        base_bpp = 8 * len(data) / s.pixels.size
        rows.append([*passes, base_bpp])
        laws_seen += laws
    mean = np.mean(rows, axis=0)
    print(f"{args.modality}: {len(rows)} test slices; residual model {residual.fingerprint}; max error {args.max_error}")
    print("| pass 1 (no neighbour) | pass 2 | pass 3 | pass 4 (eight neighbours) | residual, all passes | base |")
    print("|---|---|---|---|---|---|")
    print("| " + " | ".join(f"{v:.3f}" for v in [*mean[:4], mean[:4].mean(), mean[4]]) + " |")
    print("(bits per pixel of each pass's own pixels; the residual's mean over all pixels; the base's real bpp)")
    if args.law:
        print_laws(*(torch.cat([law[i].flatten().double() for law in laws_seen]) for i in range(4)))


def print_laws(errors: torch.Tensor, scales: torch.Tensor, below: torch.Tensor, above: torch.Tensor) -> None:
    """The residual's bits per pixel under the shipped law (bounded, and not), with its scales
    shifted, and the empirical entropy within each table (a lower bound for any law indexed by
    these scales alone, which knows nothing of the bounds)."""
    print(f"\nresidual bits per pixel over {errors.numel()} pixels:")
    for shift in (-0.2, -0.1, 0.0, 0.1, 0.2):
        bounded = float(symbol_bits(errors, scales * 2**shift, below, above).mean())
        plain = float(symbol_bits(errors, scales * 2**shift).mean())
        print(f"  Laplace, scales x 2^{shift:+.1f}: {bounded:.4f} bounded, {plain:.4f} unbounded")
    print(f"  empirical entropy per table (fitted to these pixels): {_table_entropy(errors, scales):.4f} (a bound for the unbounded law)")
    inside = (errors > below) & (errors < above)  # pixels whose symbol no bound folds
    laplace = float(symbol_bits(errors[inside], scales[inside]).mean())
    print(f"  the {float(inside.double().mean()):.1%} of pixels away from their bounds: Laplace {laplace:.4f}, "
          f"empirical entropy per table {_table_entropy(errors[inside], scales[inside]):.4f}")


def _table_entropy(errors: torch.Tensor, scales: torch.Tensor) -> float:
    """Bits per pixel of the errors under each table's own empirical distribution (quarter-octave scale bins)."""
    tables = torch.floor(torch.log2(scales) * STEPS).long()
    total = 0.0
    for table in tables.unique():
        _, counts = errors[tables == table].long().unique(return_counts=True)
        total -= float((counts * torch.log2(counts / counts.sum())).sum())
    return total / errors.numel()


if __name__ == "__main__":
    main()
