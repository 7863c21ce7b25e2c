#!/usr/bin/env python
"""What exact coding costs in rate–distortion: the shipped ladder, float path against exact path.

For every corpus CT test slice and shipped quality, codes the slice twice with the same
weights: with the float path of format 1 (CompressAI's ``compress``/``decompress`` on
float32 convolutions, one thread, as earlier releases coded) and with the exact path of
format 2 (``medvae.Codec``). Prints mean bpp (real bytes; format 1 has no pixel CRC, so
4 bytes fewer) and PSNR at the native bit depth per quality, and the BD-PSNR of the
exact path against the float path over the ladder, computed per slice and averaged.

    python benchmarks/exact_cost.py [--qualities 1,...,7] [--limit N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import medvae
from medvae import bitstream, zoo
from medvae.codec import fixed_threads
from medvae.evaluation.bdrate import bd_quality
from medvae.evaluation.datasets import load_images
from medvae.intensity import default_value_range, denormalize, normalize
from medvae.metrics import bpp, psnr

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


@torch.inference_mode()
def float_path(codec: medvae.Codec, image: np.ndarray) -> tuple[int, np.ndarray]:
    """(container bytes, decoded image) as format 1 coded them: float32 transforms, one thread."""
    model = codec.model
    lo, hi = default_value_range(image)
    h, w = image.shape
    stride = model.downsampling_factor
    x = F.pad(torch.from_numpy(normalize(image, lo, hi))[None, None], (0, (-w) % stride, 0, (-h) % stride), mode="replicate")
    with fixed_threads(1):
        out = model.compress(x)
        x_hat = model.decompress(out["strings"], out["shape"])["x_hat"]
    strings = [group[0] for group in out["strings"]]
    header = bitstream.Header(model=codec.name, fingerprint=codec.format1_fingerprint, dtype=image.dtype, shape=image.shape,
                              value_range=(lo, hi), latent_shape=tuple(out["shape"]), pixels_crc=0)
    n_bytes = len(bitstream.pack(header, strings)) - 4  # format 1: no pixel CRC
    return n_bytes, denormalize(x_hat[0, 0, :h, :w].numpy(), lo, hi, image.dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--qualities", default=",".join(map(str, zoo.qualities("medvae"))))
    parser.add_argument("--limit", type=int, default=None, help="at most this many slices")
    args = parser.parse_args(argv)
    qualities = [int(q) for q in args.qualities.split(",")]
    slices = load_images([args.manifest], "test", modality="CT", limit=args.limit)

    rows = {}  # (quality, path) -> list of (bpp, psnr) per slice
    for q in qualities:
        codec = medvae.load("medvae", q)
        for s in slices:
            n_float, decoded_float = float_path(codec, s.pixels)
            data = codec.compress(s.pixels, bits_stored=s.bits_stored)
            rows.setdefault((q, "float"), []).append((bpp(n_float, s.shape), psnr(s.pixels, decoded_float, s.bits_stored)))
            rows.setdefault((q, "exact"), []).append((bpp(len(data), s.shape), psnr(s.pixels, codec.decompress(data), s.bits_stored)))

    print(f"CT test split: {len(slices)} slices, PSNR at the native bit depth; means over slices")
    print("| quality | float bpp | float PSNR | exact bpp | exact PSNR | Δ bpp | Δ PSNR |")
    print("|---|---|---|---|---|---|---|")
    for q in qualities:
        (fb, fp), (eb, ep) = (np.mean(rows[(q, p)], axis=0) for p in ("float", "exact"))
        print(f"| q{q} | {fb:.4f} | {fp:.3f} | {eb:.4f} | {ep:.3f} | {eb - fb:+.4f} | {ep - fp:+.3f} dB |")
    if len(qualities) >= 4:
        gaps = []
        for i in range(len(slices)):
            f = [rows[(q, "float")][i] for q in qualities]
            e = [rows[(q, "exact")][i] for q in qualities]
            gaps.append(bd_quality([r for r, _ in f], [p for _, p in f], [r for r, _ in e], [p for _, p in e], method="pchip"))
        print(f"BD-PSNR of the exact path against the float path (pchip, per slice, averaged): {np.mean(gaps):+.4f} dB "
              f"(min {np.min(gaps):+.4f}, max {np.max(gaps):+.4f})")


if __name__ == "__main__":
    main()
