#!/usr/bin/env python
"""What rate control chooses, and achieves, for a few targets on one corpus CT slice.

Each target (``--targets``: ``psnr=45``, ``ratio=10``, ``bpp=0.3`` ...) goes through
:func:`medvae.rate_control.compress_to` over a shipped model (``--model``: the default,
``medvae-ctx``, or the ``medvae`` ladder), then near-lossless coding on the ladder's default
quality; prints the setting chosen, the file's bpp,
ratio (against the bits stored) and PSNR (at the bits stored), and the search time.

With ``--series N`` it codes N consecutive slices from the middle of the folder for each target
instead, twice: every slice searched from scratch, and every slice's search started where the
previous slice's ended (``compress_to(..., previous=...)``, what ``medvae compress`` does along
a series); it prints the mean search time of each and checks that both give the same files.

    python benchmarks/rate_control.py [--model medvae-ctx] [--targets psnr=45,psnr=52,psnr=60,ratio=10,bpp=0.3,bpp=2.5] [--series 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pydicom

from medvae import zoo
from medvae.rate_control import Ladder, Target, compress_to

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
    first = max(0, len(files) // 2 - args.series // 2)
    datasets = [pydicom.dcmread(f) for f in files[first : first + args.series]]
    ladder = Ladder.shipped(args.model)
    print(f"{len(datasets)} consecutive slices from {files[first].name}, {datasets[0].pixel_array.shape}")
    print("| target | from scratch s/slice | from the previous slice s/slice | same files | settings chosen |")
    print("|---|---|---|---|---|")
    for target in parse_targets(args.targets):
        runs = []
        for warm in (False, True):
            start, previous, chosen = time.perf_counter(), None, []
            for ds in datasets:
                previous = compress_to(ds.pixel_array, target, ladder, bits_stored=int(ds.BitsStored), previous=previous if warm else None)
                chosen.append(previous)
            runs.append(((time.perf_counter() - start) / len(datasets), chosen))
        (cold, cold_files), (warm_s, warm_files) = runs
        same = [c.data for c in cold_files] == [c.data for c in warm_files]
        settings = sorted({c.setting.split(" (weights")[0] for c in cold_files})
        print(f"| {target} | {cold:.1f} | {warm_s:.1f} | {'yes' if same else 'NO'} | {settings[0]} … {settings[-1]} ({len(settings)}) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
