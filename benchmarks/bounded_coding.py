#!/usr/bin/env python
"""Time of one near-lossless coding on a base already coded, with and without the residual
network's first pass reused (what ``Codec.bounded_coder`` does for rate control, which codes
one base with many bounds): the first pass reads no decoded residual, so it is the same for
every bound. Checks that both give the same bytes and pixels.

    python benchmarks/bounded_coding.py [--bounds 2,4,8,16] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.io.slices import manifest_slices

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bounds", default="2,4,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not MANIFEST.is_file():
        raise SystemExit(f"{MANIFEST}: the corpus is not here")
    torch.set_num_threads(args.threads)
    image = next(s for s in manifest_slices(MANIFEST, split="test") if s.modality == "CT").pixels
    codec = medvae.load("medvae")
    coder = codec.residual.coder
    base, value_range, exact = codec.base_layer(image)
    start = time.perf_counter()
    first = coder.first_pass(base, value_range)
    first_s = time.perf_counter() - start
    reused, alone = [], []
    for _ in range(args.repeats):
        for bound in (int(b) for b in args.bounds.split(",")):
            start = time.perf_counter()
            strings, pixels = coder.encode(image, base, value_range, bound, 0, first, exact)
            reused.append(time.perf_counter() - start)
            start = time.perf_counter()
            strings_alone, pixels_alone = coder.encode(image, base, value_range, bound, exact=exact)
            alone.append(time.perf_counter() - start)
            if strings != strings_alone or not np.array_equal(pixels, pixels_alone):
                raise SystemExit(f"max error {bound}: the reused first pass changed the file")
    print(f"{image.shape[0]}x{image.shape[1]} CT slice, {args.threads} thread(s), bounds {args.bounds}, {args.repeats} repeats")
    print(f"first pass alone: {first_s:.3f} s")
    print(f"residual coding per bound: {np.mean(alone):.3f} s as compress() does it, {np.mean(reused):.3f} s with the first "
          f"pass reused ({1 - np.mean(reused) / np.mean(alone):.0%} less); the same bytes and pixels")


if __name__ == "__main__":
    main()
