#!/usr/bin/env python
"""bpp and PSNR of a variable-rate model over a fine quality grid on corpus test slices.

Shows that PSNR rises smoothly between the trained levels (the integer qualities), as the
geometric gain mix makes it (``docs/variable-rate.md``; the linear mix of format 5 lost
5–8 dB halfway between levels: run this at commit db3636d to see it).

    python benchmarks/quality_sweep.py [--model medvae-ctx] [--slices 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import medvae
from medvae import metrics
from medvae.evaluation.datasets import load_images
from medvae.io.slices import evenly_spaced_indices

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"
QUALITIES = (1, 1.5, 2, 2.5, 3, 3.5, 4, 4.25, 4.5, 4.75, 5, 5.5, 6, 6.5, 7)


def measure(codec: medvae.Codec, image, quality: float) -> tuple[float, float]:
    """(bpp, PSNR at the bits stored) of one image coded and decoded at ``quality``."""
    data = codec.compress(image.pixels, bits_stored=image.bits_stored, quality=quality)
    return metrics.bpp(len(data), image.pixels.shape), metrics.psnr(image.pixels, codec.decompress(data), image.bits_stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="medvae-ctx")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--slices", type=int, default=1, help="evenly spaced CT test slices")
    args = parser.parse_args(argv)
    images = load_images([args.manifest], "test", modality="CT")
    images = [images[i] for i in evenly_spaced_indices(len(images), args.slices)]
    codec = medvae.load(args.model)
    print(f"{args.model}, {len(images)} CT test slice(s): mean bpp / PSNR (dB)")
    for quality in QUALITIES:
        bpp, psnr = np.mean([measure(codec, im, quality) for im in images], axis=0)
        print(f"quality {quality:<4g} {bpp:.4f} bpp  {psnr:.2f} dB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
