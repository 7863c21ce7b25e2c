#!/usr/bin/env python
"""Encode plus decode time of lossless and near-lossless coding of 512×512 CT test slices.

The issue's time target is encode + decode of a 512×512 slice in 2 s on 2 cores. This codes a
few CT test slices of the corpus with the shipped default at each bound (``--max-error``), keeps
each slice's fastest of ``--repeats`` runs (the machine's speed varies from minute to minute), and
prints the mean over the slices per bound, with the process' CPU seconds (both threads; steadier
than the wall clock when the host is busy). Faster than ``benchmarks/lossless.py``, which also
times every slice but codes every anchor too; meant for A/B runs of a change, alternating separate
processes (two trees, ``git worktree``): one process timing both is biased.
``--series``: each slice coded given the two test slices before it, each of those coded alone at
the same bound and decoded (outside the timing): the work ``Codec.compress_series`` does for a
slice that is no key slice (the slices must follow two others of their series in the test split).

    python benchmarks/lossless_time.py [--slices 0,7,15] [--max-error 0,2,8] [--repeats 2] [--series]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.evaluation.datasets import load_images

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--slices", default="0,7,15", help="indexes into the CT test split")
    parser.add_argument("--max-error", default="0,2,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--series", action="store_true", help="code each slice given the two before it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_images([args.data], "test", modality="CT")
    indexes = [int(i) for i in args.slices.split(",")]
    if args.series and (min(indexes) < 2 or any(images[i - 2].patient != images[i].patient for i in indexes)):
        parser.error("--series: each slice must follow two slices of its series in the test split")
    picked = [images[i] for i in indexes]
    codec = medvae.load("medvae")
    codec.decompress(codec.compress(picked[0].pixels, max_error=0))  # warm-up
    given = ", each given the two before it" if args.series else ""
    print(f"| max error | encode + decode s (mean over {len(picked)} slices{given}, fastest of {args.repeats}) | encode s | decode s | CPU s |")
    print("|---|---|---|---|---|")
    for bound in (int(t) for t in args.max_error.split(",")):
        best = []
        for i, image in zip(indexes, picked):
            previous = [codec.decompress(codec.compress(images[j].pixels, max_error=bound)) for j in (i - 1, i - 2)] if args.series else None
            runs = []
            for _ in range(args.repeats):
                start, cpu = time.perf_counter(), time.process_time()
                data = codec.compress(image.pixels, max_error=bound, previous=previous)
                coded = time.perf_counter()
                codec.decompress(data, previous=previous)
                runs.append((time.perf_counter() - start, coded - start, time.process_time() - cpu))
            total, encode, _ = min(runs)
            best.append((total, encode, total - encode, min(run[2] for run in runs)))
        total, encode, decode, cpu = np.mean(best, axis=0)
        print(f"| {bound} | {total:.3f} | {encode:.3f} | {decode:.3f} | {cpu:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
