#!/usr/bin/env python
"""What key slices cost: a CT test series coded near-losslessly with at most N slices decoded before one.

Series coding (:meth:`medvae.Codec.compress_series`, ``medvae compress --series --max-chain N``)
codes a key slice alone in the middle of every 2N + 1 slices, so that one slice decodes after at
most N others; the others are coded given a neighbour, in fewer bits. This codes the longest
series of the corpus CT test split (real bytes, header included) at each bound τ and each N
(4096: one key slice for the series) and prints the mean bpp a slice, next to JPEG-LS NEAR = τ on
the same slices (:mod:`medvae.evaluation`'s ``jpegls`` points).

    python benchmarks/key_slices.py [--max-error 1,2] [--max-chain 7,15,4096]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import medvae
from medvae.evaluation.codecs import expand
from medvae.evaluation.datasets import group_series, load_images
from medvae.series import MAX_CHAIN

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default=str(MANIFEST))
    parser.add_argument("--max-error", type=_ints, default=[1, 2], metavar="T,T,…")
    parser.add_argument("--max-chain", type=_ints, default=[7, 15, MAX_CHAIN], metavar="N,N,…")
    args = parser.parse_args(argv)
    images = load_images([args.manifest], "test", modality="CT")
    series = max(group_series(images), key=len)
    slices = [images[i] for i in series]
    pixels = sum(s.pixels.size for s in slices)
    print(f"{len(slices)} slices of {slices[0].patient} ({slices[0].shape[0]}x{slices[0].shape[1]})")
    codec = medvae.load("medvae")
    for tau in args.max_error:
        jpegls = expand(f"jpegls={tau}")[0]
        reference = sum(len(jpegls.encode(s.pixels, s.bits_stored)) * 8 for s in slices) / pixels
        print(f"τ = {tau}: JPEG-LS NEAR = {tau} {reference:.4f} bpp")
        for max_chain in args.max_chain:
            files = codec.compress_series([s.pixels for s in slices], max_error=tau, max_chain=max_chain, progress=True)
            bpp = sum(len(f) * 8 for f in files) / pixels
            keys = sum(medvae.read_header(f).previous_crc is None for f in files)
            print(f"  at most {max_chain} slices decoded before one: {bpp:.4f} bpp, {keys} key slice(s), "
                  f"{100 * (bpp / reference - 1):+.1f} % against JPEG-LS", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
