#!/usr/bin/env python
"""Encode/decode time of a 512×512 int16 slice per model family, next to OpenJPEG JPEG 2000.

Prints a table (median of ``--repeats`` runs after one warm-up). Untrained models are
used unless ``--checkpoint NAME=PATH`` is given: speed does not depend on training,
bytes do (so untrained byte counts are only a sanity figure). Learned codecs code on one
thread (``medvae.Codec`` pins it: the entropy coder must see the same floats on both
sides); JPEG 2000 comes from the evaluation registry, rate-targeted like in ``evaluate.py``.

    python benchmarks/speed.py [--repeats 5] [--N 128 --M 192] [--checkpoint medvae=PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import medvae
from medvae.checkpoint import load_model
from medvae.evaluation import codecs as registry


def synthetic_ct(size: int = 512, seed: int = 0) -> np.ndarray:
    """A CT-like int16 slice in HU: air, a body ellipse with noise, bone, a lung."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.full((size, size), -1024.0)
    body = (yy - 0.5) ** 2 / 0.42**2 + (xx - 0.5) ** 2 / 0.36**2 < 1
    image[body] = 40 + 30 * np.sin(12 * xx[body]) + rng.normal(0, 15, body.sum())
    image[(yy - 0.45) ** 2 + (xx - 0.35) ** 2 < 0.01] = -800 + rng.normal(0, 30)
    image[(yy - 0.7) ** 2 + (xx - 0.5) ** 2 < 0.002] = 1200
    return np.clip(image, -1024, 3071).astype(np.int16)


def corpus_slice() -> np.ndarray | None:
    """A real 512×512 CT slice from the corpus, when ../shared is present."""
    from pathlib import Path

    import pydicom

    folder = Path(__file__).resolve().parents[2] / "shared/data/corpus/ct/totalseg-abdomen"
    files = sorted(folder.glob("*.dcm"))
    if not files:
        return None
    return pydicom.dcmread(files[len(files) // 2]).pixel_array  # uint16, 12 bits stored


def median_time(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", help="use trained weights for a family")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic slice even when the corpus is present")
    args = parser.parse_args()
    image = None if args.synthetic else corpus_slice()
    source = "corpus CT (totalseg-abdomen)" if image is not None else "synthetic CT"
    if image is None:
        image = synthetic_ct()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)

    bits = 12 if source.startswith("corpus") else 16
    print(f"{image.shape[0]}x{image.shape[1]} {image.dtype} slice ({source}, {bits} bits), torch {torch.__version__}, 1 coding thread, "
          f"median of {args.repeats} runs, untrained N={args.N} M={args.M} unless a checkpoint is named")
    print(f"{'codec':<26}{'encode s':>10}{'decode s':>10}{'bytes':>10}{'bpp':>8}")
    for name in medvae.models.available():
        model = load_model(checkpoints[name]) if name in checkpoints else medvae.models.create(name, N=args.N, M=args.M)
        codec = medvae.Codec(model)
        enc, data = median_time(lambda: codec.compress(image, bits_stored=bits), args.repeats)
        dec, _ = median_time(lambda: codec.decompress(data), args.repeats)
        print(f"{name:<26}{enc:>10.3f}{dec:>10.3f}{len(data):>10}{8 * len(data) / image.size:>8.3f}")
    for point in registry.expand("jpeg2000=lossless,0.25,0.5,1"):
        enc, data = median_time(lambda: point.encode(image, bits), args.repeats)
        dec, _ = median_time(lambda: point.decode(data), args.repeats)
        print(f"{point.label:<26}{enc:>10.3f}{dec:>10.3f}{len(data):>10}{8 * len(data) / image.size:>8.3f}")


if __name__ == "__main__":
    main()
