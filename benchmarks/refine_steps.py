#!/usr/bin/env python
"""What encoder-side latent refinement buys per step: bpp, PSNR and encode time.

Codes evenly spaced corpus test slices (loaded as ``benchmarks/results.py`` loads
them) with shipped ``medvae`` qualities and ``Codec.compress(refine_steps=k)`` for
each k, decodes the real bytes, and prints the means per quality and k, with the
BD-rate of each k against no refinement where there are 4 or more qualities.

    python benchmarks/refine_steps.py [--qualities 2,5,7] [--steps 0,25,50,100,200] [--slices 3] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.evaluation.bdrate import bd_rate
from medvae.evaluation.datasets import load_images
from medvae.io.slices import evenly_spaced_indices
from medvae.evaluation.learned import Learned
from medvae.evaluation.run import evaluate_point

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def measure(codec: medvae.Codec, images: list, steps: int) -> tuple[float, float, float]:
    """Mean (bpp, PSNR, encode seconds) over ``images`` with ``steps`` refinement steps,
    each slice coded and measured as ``evaluate.py`` does."""
    point = Learned(codec, codec.name, "", refine_steps=steps)
    rows = [evaluate_point(point, im)[0] for im in images]
    return tuple(float(np.mean([row[key] for row in rows])) for key in ("bpp", "psnr", "encode_s"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--split", default="test")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--qualities", type=_ints, default=[2, 5, 7], help="shipped medvae qualities, comma-separated")
    parser.add_argument("--steps", type=_ints, default=[0, 25, 50, 100, 200], help="refinement steps, comma-separated")
    parser.add_argument("--slices", type=int, default=3, help="evenly spaced slices of the split (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for refinement")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images = load_images([args.manifest], args.split, modality=args.modality)
    images = [images[i] for i in evenly_spaced_indices(len(images), args.slices)]
    print(f"{len(images)} {args.modality} {args.split} slices: {', '.join(f'{im.patient}/{Path(im.file).name}#{im.index}' for im in images)}")
    print(f"{'quality':>7} {'steps':>5} {'bpp':>7} {'PSNR dB':>8} {'encode s':>9}")
    curves: dict[int, list[tuple[float, float]]] = {k: [] for k in args.steps}
    for quality in args.qualities:
        codec = medvae.load("medvae", quality=quality)
        for steps in args.steps:
            bpp, quality_db, seconds = measure(codec, images, steps)
            curves[steps].append((bpp, quality_db))
            print(f"{'q' + str(quality):>7} {steps:>5} {bpp:7.3f} {quality_db:8.2f} {seconds:9.1f}", flush=True)
    if len(args.qualities) >= 4 and 0 in curves:
        anchor = list(zip(*curves[0]))
        for steps in (k for k in args.steps if k):
            test = list(zip(*curves[steps]))
            print(f"BD-rate (PSNR) of {steps} steps against none: {bd_rate(*anchor, *test, method='pchip'):+.1f} %")


if __name__ == "__main__":
    main()
