#!/usr/bin/env python
"""Would a classical enhancement layer carry the learned ladder to high rates? (It does not.)

A two-layer codec: a shipped ``medvae`` quality codes the slice, then a classical codec
codes the residual ``image - decoded`` (JPEG 2000 at a target bpp, or JPEG-LS
near-lossless, which bounds the error). Each slice goes through
:func:`medvae.evaluation.run.evaluate_point`, as in ``evaluate.py``: real bytes of both
layers, the same metrics. The script prints the layered points next to the same classical
codec coding the slice alone; the layers pay off only where the layered line beats the
single-layer one at the same bpp.

    python benchmarks/residual_layer.py [--qualities 3,5] [--slices 4]
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

import medvae
from medvae.evaluation.codecs import ImageCodec
from medvae.evaluation.datasets import load_images
from medvae.io.slices import evenly_spaced_indices
from medvae.evaluation.jpeg2000 import JPEG2000
from medvae.evaluation.jpegls import JPEGLS
from medvae.evaluation.run import evaluate_point

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


class Layered(ImageCodec):
    """``codec`` (learned base layer) plus ``residual`` (a classical codec) on what it missed."""

    family = "layered"
    knob = "layers"

    def __init__(self, codec: medvae.Codec, quality: int, residual: ImageCodec):
        super().__init__(f"q{quality}+{residual.label}")
        self.codec, self.residual = codec, residual

    @property
    def label(self) -> str:
        return f"medvae {self.value}"

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        base = self.codec.compress(image, bits_stored=bits_stored or 0)
        residual = image.astype(np.int32) - self.codec.decompress(base).astype(np.int32)
        bits = int(np.abs(residual).max()).bit_length() + 1  # signed
        enhancement = self.residual.encode(residual.astype(np.int16), max(bits, 2))
        return struct.pack("<I", len(base)) + base + enhancement

    def decode(self, data: bytes) -> np.ndarray:
        (n,) = struct.unpack("<I", data[:4])
        decoded = self.codec.decompress(data[4 : 4 + n])
        total = decoded.astype(np.int32) + self.residual.decode(data[4 + n :]).astype(np.int32)
        info = np.iinfo(decoded.dtype)
        return np.clip(total, info.min, info.max).astype(decoded.dtype)


def mean_point(point: ImageCodec, images: list) -> tuple[float, float, float]:
    """Mean (bpp, PSNR, max |error|) of ``point`` over ``images``."""
    rows = [evaluate_point(point, im)[0] for im in images]
    failed = [f"{r['file']}#{r['slice']}: {r['error']}" for r in rows if r["error"]]
    if failed:
        raise SystemExit(f"{point.label} failed on " + "; ".join(failed))
    return (float(np.mean([r["bpp"] for r in rows])), float(np.mean([r["psnr"] for r in rows])),
            float(max(r["max_abs_error"] for r in rows)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--qualities", default="3,5", help="shipped medvae qualities for the base layer")
    parser.add_argument("--j2k-bpp", default="0.25,0.5,1,1.5", help="JPEG 2000 residual rates")
    parser.add_argument("--near", default="0,2,8", help="JPEG-LS NEAR values (0: lossless)")
    parser.add_argument("--slices", type=int, default=4, help="evenly spaced test slices (0: all)")
    args = parser.parse_args(argv)

    images = load_images([args.manifest], "test", modality=args.modality)
    images = [images[i] for i in evenly_spaced_indices(len(images), args.slices)]
    near = [JPEGLS(int(v)) for v in args.near.split(",")]
    print(f"{len(images)} {args.modality} test slices; mean bpp, PSNR dB, worst max |error|")
    print(f"{'codec':<32}{'bpp':>8}{'PSNR':>8}{'max err':>9}")
    points = [JPEG2000(b) for b in (0.5, 0.75, 1.0, 1.5, 2.0)] + near  # each classical codec alone
    for quality in (int(q) for q in args.qualities.split(",")):
        codec = medvae.load("medvae", quality=quality)
        points += [Layered(codec, quality, residual) for residual in [JPEG2000(float(v)) for v in args.j2k_bpp.split(",")] + near]
    for point in points:
        bpp, db, err = mean_point(point, images)
        print(f"{point.label:<32}{bpp:>8.3f}{db:>8.2f}{err:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
