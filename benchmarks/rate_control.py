#!/usr/bin/env python
"""What rate control chooses, and achieves, for a few targets on one corpus CT slice.

Each target (``--targets``: ``psnr=45``, ``ratio=10``, ``bpp=0.3`` ...) goes through
:func:`medvae.rate_control.compress_to` over a shipped model (``--model``: the default,
``medvae-ctx``, or the ``medvae`` ladder), then near-lossless coding on the ladder's default
quality; prints the setting chosen, the file's bpp,
ratio (against the bits stored) and PSNR (at the bits stored), and the search time.

With ``--series N`` it codes N consecutive slices (in anatomical order) from the middle of the
folder for each target instead, three times: every slice searched from scratch, every slice's
search started where the previous slice's ended (``compress_to(..., previous=...)``, what
``medvae compress`` does along a series), and that with the near-lossless candidates coded given
the previous slice as decoded (``previous_slice=``, key slices alone: ``medvae compress --series``);
it prints the mean search time of the first two, checks that they give the same files, and
the mean bpp and lowest PSNR of the second and third.

    python benchmarks/rate_control.py [--model medvae-ctx] [--targets psnr=45,psnr=52,psnr=60,ratio=10,bpp=0.3,bpp=2.5] [--series 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pydicom

from medvae import zoo
from medvae.io.series import order_slices
from medvae.rate_control import Ladder, Target, compress_to
from medvae.series import Neighbours, coding_plan

REPO = Path(__file__).resolve().parents[1]
SERIES = REPO.parent / "shared/data/corpus/ct/totalseg-abdomen"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="psnr=45,psnr=52,psnr=60,ratio=10,bpp=0.3,bpp=2.5")
    parser.add_argument("--model", default=zoo.DEFAULT_MODEL, help="shipped model whose qualities are searched")
    parser.add_argument("--folder", type=Path, default=SERIES, help="a folder of CT slices; its middle file is coded")
    parser.add_argument("--series", type=int, default=0, help="code this many consecutive slices, cold and warm started")
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("*.dcm"))
    if not files:
        raise SystemExit(f"{args.folder}: no DICOM files (the corpus is not here)")
    if args.series:
        return series(files, args)
    ds = pydicom.dcmread(files[len(files) // 2])
    image, bits = ds.pixel_array, int(ds.BitsStored)
    ladder = Ladder.shipped(args.model)
    print(f"{files[len(files) // 2].name}: {image.shape[0]}x{image.shape[1]}, {bits} bits stored")
    print("| target | chosen | bpp | ratio | PSNR (dB) | search s |")
    print("|---|---|---|---|---|---|")
    for target in parse_targets(args.targets):
        start = time.perf_counter()
        choice = compress_to(image, target, ladder, bits_stored=bits)
        print(f"| {target} | {choice.setting} | {choice.bpp:.3f} | {choice.ratio:.1f} | "
              f"{choice.psnr:.2f} | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


def parse_targets(spec: str) -> list[Target]:
    """``"psnr=45,ratio=10"`` as targets."""
    return [Target(**{name: float(value)}) for name, value in (item.split("=") for item in spec.split(","))]


def series(files: list[Path], args: argparse.Namespace) -> int:
    """Mean search time per slice over ``args.series`` consecutive slices, each searched from
    scratch and each started from the previous slice's choice; the files must be the same."""
    files = order_slices([(f, pydicom.dcmread(f, stop_before_pixels=True)) for f in files])
    first = max(0, len(files) // 2 - args.series // 2)
    datasets = [pydicom.dcmread(f) for f in files[first : first + args.series]]
    ladder = Ladder.shipped(args.model)
    print(f"{len(datasets)} consecutive slices from {files[first].name}, {datasets[0].pixel_array.shape}")
    print("| target | from scratch s/slice | from the previous slice s/slice | same files | settings chosen "
          "| bpp / lowest PSNR alone | bpp / lowest PSNR given the previous slice |")
    print("|---|---|---|---|---|---|---|")
    for target in parse_targets(args.targets):
        runs = []
        for warm, given in ((False, False), (True, False), (True, True)):
            start, previous, chosen = time.perf_counter(), None, {}
            plan = coding_plan(len(datasets)) if given else [(k, None) for k in range(len(datasets))]
            neighbours = Neighbours(plan)
            for k, reference in plan:
                image, before = datasets[k].pixel_array, neighbours.given(reference)
                previous = compress_to(image, target, ladder, bits_stored=int(datasets[k].BitsStored),
                                       previous=previous if warm else None, previous_slice=before)
                neighbours.coded(k, reference, previous.pixels, before, previous.data)
                chosen[k] = previous
            chosen = [chosen[k] for k in range(len(datasets))]
            runs.append(((time.perf_counter() - start) / len(datasets), chosen))
        (cold, cold_files), (warm_s, warm_files), (_, series_files) = runs
        same = [c.data for c in cold_files] == [c.data for c in warm_files]
        settings = sorted({c.setting.split(" (weights")[0] for c in cold_files})
        figures = [f"{np.mean([c.bpp for c in files]):.3f} / {min(c.psnr for c in files):.2f}" for files in (warm_files, series_files)]
        print(f"| {target} | {cold:.1f} | {warm_s:.1f} | {'yes' if same else 'NO'} | {settings[0]} … {settings[-1]} ({len(settings)}) "
              f"| {' | '.join(figures)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
