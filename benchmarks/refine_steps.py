#!/usr/bin/env python
"""What encoder-side latent refinement buys per step: bpp, PSNR and encode time.

Codes evenly spaced corpus test slices (loaded as ``benchmarks/results.py`` loads
them) with a shipped model's qualities (``--model``: the ``medvae`` ladder, or a
variable-rate model such as the default ``medvae-ctx``, whose qualities may be
fractional) and ``Codec.compress(refine_steps=k)`` for each k, decodes the real bytes,
and prints the means per quality and k, with the BD-rate of each k against no
refinement where there are 4 or more qualities: per image over its own shared PSNR range
(PCHIP), then averaged. With ``--reference SPEC`` (an ``evaluate.py`` codec spec, e.g.
``jpeg2000=0.05,0.1,0.2,0.35,0.5,0.75,1``) the same slices are coded with it too, and each step
count's per-image BD-rate against it is printed over the points within 0.05–1 bpp, as
``benchmarks/context.py`` computes it.

    python benchmarks/refine_steps.py [--model medvae] [--qualities 2,5,7] [--steps 0,25,50,100,200] [--slices 3] [--threads 1] [--reference SPEC]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae import zoo
from medvae.evaluation.bdrate import bd_rate_per_image
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import load_images
from medvae.io.slices import evenly_spaced_indices
from medvae.evaluation.learned import Learned
from medvae.evaluation.run import evaluate_point

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"
#: The rate band of the comparison with ``--reference`` (that of ``benchmarks/context.py``).
BAND = (0.05, 1.0)


def _listed(convert):
    """An argparse type: comma-separated values, each through ``convert``."""
    return lambda text: [convert(v) for v in text.split(",") if v.strip()]


def measure(codec: medvae.Codec, images: list, steps: int, quality: float | None = None) -> list[dict]:
    """Rows (one per slice, as ``evaluate.py`` codes and measures them) with ``steps``
    refinement steps, at ``quality`` for a variable-rate codec; the codec column names the
    step count, so the BD-rates compare step counts."""
    point = Learned(codec, f"{steps} steps", "", refine_steps=steps, quality=quality)
    return [evaluate_point(point, im)[0] for im in images]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--split", default="test")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--model", default="medvae", help="shipped model: the medvae ladder or a variable-rate model (medvae-ctx)")
    parser.add_argument("--qualities", type=_listed(float), default=[2, 5, 7], help="qualities, comma-separated")
    parser.add_argument("--steps", type=_listed(int), default=[0, 25, 50, 100, 200], help="refinement steps, comma-separated")
    parser.add_argument("--slices", type=int, default=3, help="evenly spaced slices of the split (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for refinement")
    parser.add_argument("--reference", default=None, metavar="SPEC", help="a classical codec spec to compare each step count with")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images = load_images([args.manifest], args.split, modality=args.modality)
    images = [images[i] for i in evenly_spaced_indices(len(images), args.slices)]
    print(f"{len(images)} {args.modality} {args.split} slices: {', '.join(f'{im.patient}/{Path(im.file).name}#{im.index}' for im in images)}")
    print(f"{'quality':>7} {'steps':>5} {'bpp':>7} {'PSNR dB':>8} {'encode s':>9}")
    rows: list[dict] = []
    variable = zoo.is_variable_rate(args.model)
    shared = medvae.load(args.model) if variable else None
    for quality in args.qualities:
        codec = shared or medvae.load(args.model, quality=quality)  # a ladder refuses a fractional quality
        for steps in args.steps:
            mine = measure(codec, images, steps, quality if variable else None)
            rows += mine
            bpp, quality_db, seconds = (float(np.mean([row[key] for row in mine])) for key in ("bpp", "psnr", "encode_s"))
            print(f"{'q' + format(quality, 'g'):>7} {steps:>5} {bpp:7.3f} {quality_db:8.2f} {seconds:9.1f}", flush=True)
    if len(args.qualities) >= 4 and 0 in args.steps:
        for steps in (k for k in args.steps if k):
            mean, used, skipped = bd_rate_per_image(rows, "0 steps", f"{steps} steps", "psnr", "pchip")
            print(f"BD-rate (PSNR, per image) of {steps} steps against none: {mean:+.1f} % ({used} of {used + skipped} slices)")
    if args.reference:
        reference = expand(args.reference)
        rows += [evaluate_point(point, im)[0] for point in reference for im in images]
        band = [r for r in rows if BAND[0] <= float(r["bpp"]) <= BAND[1] and not r["error"]]
        for steps in args.steps:
            mean, used, skipped = bd_rate_per_image(band, reference[0].family, f"{steps} steps", "psnr", "pchip")
            print(f"BD-rate (PSNR, per image, {BAND[0]}–{BAND[1]} bpp) of {steps} steps against {reference[0].family}: "
                  f"{mean:+.1f} % ({used} of {used + skipped} slices)")


if __name__ == "__main__":
    main()
