#!/usr/bin/env python
"""Where the correction of the reconstruction pays for its 82 bytes: BD-rate with against without, by image size.

Codes square images of 256², 363² (just above the threshold) and 512² pixels made from evenly spaced corpus CT test slices
and the MR test slice, two ways (a centred crop at full resolution, and the whole slice downsampled
by the largest power of two that leaves the side, then centre-cropped: small images are both), with the shipped ``medvae-ctx`` at qualities 0 to 7, once writing the correction
(:mod:`medvae.correction`, format 11; the size threshold :data:`medvae.correction.MIN_PIXELS` lifted
for the measurement) and once without it, and prints per crop size the per-image BD-rate of the
corrected files against the plain ones (PSNR at the stored bits, from the files' headers; PCHIP over
each image's shared range), averaged. This sets ``MIN_PIXELS``: below it the block costs more than
it gains.

    python benchmarks/correction_sizes.py [--slices 4] [--sizes 256,363,512]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import medvae
from medvae import bitstream, correction
from medvae.evaluation.bdrate import bd_rate
from medvae.evaluation.datasets import load_images
from medvae.io.slices import evenly_spaced_indices

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"
QUALITIES = range(8)


def curve(codec: medvae.Codec, image: np.ndarray, bits: int) -> tuple[list[float], list[float]]:
    """(bpp, PSNR) at every quality, from the real files."""
    rates, psnrs = [], []
    for quality in QUALITIES:
        data = codec.compress(image, quality=quality, bits_stored=bits)
        rates.append(8 * len(data) / image.size)
        psnrs.append(bitstream.read_header(data).psnr)
    return rates, psnrs


def centre(image: np.ndarray, side: int, scaled: bool) -> np.ndarray:
    """The centred side × side crop; ``scaled``: of the image downsampled by 2 as often as it stays at least ``side``."""
    while scaled and min(image.shape) >= 2 * side:
        image = image[::2, ::2]
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--slices", type=int, default=4, help="evenly spaced CT test slices")
    parser.add_argument("--sizes", default="256,363,512")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ct = load_images([args.manifest], "test", modality="CT")
    images = [ct[i] for i in evenly_spaced_indices(len(ct), args.slices)] + load_images([args.manifest], "test", modality="MR")
    with_block, plain = medvae.load("medvae-ctx"), medvae.load("medvae-ctx", correction=False)
    print(f"{len(images)} images ({', '.join(f'{Path(i.file).name}#{i.index}' for i in images)}); qualities 0–7")
    print("side   pixels  modality  made by      BD-rate with the correction against without (per image, PCHIP)")
    with mock.patch.object(correction, "MIN_PIXELS", 0):
        for side in map(int, args.sizes.split(",")):
            for modality in ("CT", "MR"):
                for scaled in (False, True):
                    changes = []
                    for image in (i for i in images if i.modality == modality):
                        crop, bits = centre(image.pixels, side, scaled), image.bits_stored
                        changes.append(bd_rate(*curve(plain, crop, bits), *curve(with_block, crop, bits), "pchip"))
                    if changes:
                        how = "downsampling" if scaled else "cropping"
                        print(f"{side:4d} {side * side:8,d}  {modality:8s}  {how:12s} {np.mean(changes):+.2f} % "
                              f"(each: {', '.join(f'{c:+.2f}' for c in changes)})", flush=True)
    print(f"MIN_PIXELS = {correction.MIN_PIXELS:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
