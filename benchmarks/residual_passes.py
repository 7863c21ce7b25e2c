#!/usr/bin/env python
"""Where the lossless bits go: the residual layer's four passes, and the base, per CT test slice.

The shipped default base (``medvae`` q5) codes each slice of the corpus test split; the residual
model's estimate of each pass's bits (:func:`medvae.residual.model.pass_bits`, the coder's cost,
escapes aside) is printed per pixel of the slice, next to the base's real bits per pixel. The
first pass sees no decoded neighbour and the last sees eight, so the spread says what a finer
pass schedule could gain.

    python benchmarks/residual_passes.py [--modality CT] [--every 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.io.slices import manifest_slices
from medvae.residual.model import pass_bits, slice_tensors

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--every", type=int, default=3, help="every n-th test slice")
    args = parser.parse_args(argv)
    if not MANIFEST.is_file():
        raise SystemExit(f"{MANIFEST}: the corpus is not here")
    slices = [s for s in manifest_slices(MANIFEST, split="test") if s.modality == args.modality][:: args.every]
    codec = medvae.load("medvae")
    model = codec.residual.model.eval()
    rows = []
    for s in slices:
        data, base = codec.compress_with_pixels(s.pixels)  # the base's file and what it decodes to
        image, base_t, lo, hi = slice_tensors(s.pixels, base, medvae.read_header(data).value_range)
        with torch.no_grad():
            passes = pass_bits(model, image, base_t, lo, hi)[0] / (image.numel() / 4)  # each pass codes a quarter
        base_bpp = 8 * len(data) / s.pixels.size
        rows.append([*passes.tolist(), base_bpp])
    mean = np.mean(rows, axis=0)
    print(f"{args.modality}: {len(rows)} test slices; residual model {codec.residual.fingerprint}")
    print("| pass 1 (no neighbour) | pass 2 | pass 3 | pass 4 (eight neighbours) | residual, all passes | base |")
    print("|---|---|---|---|---|---|")
    print("| " + " | ".join(f"{v:.3f}" for v in [*mean[:4], mean[:4].mean(), mean[4]]) + " |")
    print("(bits per pixel of each pass's own pixels; the residual's mean over all pixels; the base's real bpp)")


if __name__ == "__main__":
    main()
