#!/usr/bin/env python
"""Encode/decode time of a 512×512 slice with 1 and 2 torch threads, next to OpenJPEG JPEG 2000.

Prints a table (median of ``--repeats`` runs after one warm-up): the shipped default
``medvae`` weights, then every model family untrained at ``--N``/``--M`` unless
``--checkpoint NAME=PATH`` is given (speed does not depend on training, bytes do, so
untrained byte counts are only a sanity figure). Coding is exact (``medvae.exact``), so
the thread count changes the time, never the bytes. JPEG 2000 comes from the evaluation
registry, rate-targeted (bpp, OpenJPEG's own rate allocation) at the shipped model's
rate and lossless.

    python benchmarks/speed.py [--repeats 3] [--N 128 --M 192] [--checkpoint medvae=PATH] [--threads 1,2]

With ``--sizes 512,2048,4096,8192`` it instead measures how time and peak memory grow with
the slice: each size is encoded, then decoded, in a fresh process (the shipped default,
one torch thread unless ``--threads N``), which reports its wall time and peak resident memory (``VmHWM``).
Coding runs in tiles (``medvae.exact.twin``), so memory should stay flat and time grow
with the pixels.

    python benchmarks/speed.py --sizes 512,2048,4096,8192
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def one_stage(stage: str, path: Path, threads: int) -> None:
    """Encode ``path``.npy into ``path``, or decode ``path``; print time, peak RSS and the RSS
    the process had before coding (libraries and weights)."""
    torch.set_num_threads(threads)
    codec = medvae.load("medvae")
    image = np.load(path.with_suffix(".npy")) if stage == "encode" else None
    loaded = peak_rss_mb()
    start = time.perf_counter()
    if stage == "encode":
        path.write_bytes(codec.compress(image, bits_stored=16))
    else:
        codec.decompress(path.read_bytes())
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.3f} {peak_rss_mb():.0f} {loaded:.0f}")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB. Not ``ru_maxrss``: that one keeps
    the peak of the process that forked this one (the benchmark's parent) across ``exec``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


def size_table(sizes: list[int], threads: int) -> None:
    """Time and peak memory of encoding and decoding per slice size, each stage in a fresh process."""
    print(f"shipped default medvae, synthetic CT, {threads} torch thread(s), torch {torch.__version__}; "
          "peak RSS of the whole coding process (VmHWM; 'before' is after importing torch and CompressAI and "
          "loading the weights, the image already read), time from weights loaded to bytes/pixels out")
    print("| size | pixels | encode s | encode peak MB | decode s | decode peak MB | before MB | bytes | s per Mpixel |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            path = Path(scratch) / f"{size}.mvae"
            np.save(path.with_suffix(".npy"), synthetic_ct(size))  # made here, freed before the children run
            rows = []
            for stage in ("encode", "decode"):
                out = subprocess.run([sys.executable, __file__, "--stage", stage, "--path", str(path), "--threads", str(threads)],
                                     check=True, capture_output=True, text=True).stdout.split()
                rows.append((float(out[-3]), float(out[-2]), float(out[-1])))
            (enc, enc_mb, before), (dec, dec_mb, _) = rows
            mpix = size * size / 1e6
            print(f"| {size}x{size} | {size * size:,} | {enc:.1f} | {enc_mb:.0f} | {dec:.1f} | {dec_mb:.0f} | {before:.0f} | "
                  f"{path.stat().st_size:,} | {(enc + dec) / mpix:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", help="use trained weights for a family")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic slice even when the corpus is present")
    parser.add_argument("--sizes", help="comma-separated slice sizes: time and peak memory per size instead")
    parser.add_argument("--stage", choices=("encode", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if args.stage:
        return one_stage(args.stage, args.path, threads[0])
    if args.sizes:
        return size_table([int(s) for s in args.sizes.split(",")], threads[0])
    image = None if args.synthetic else corpus_slice()
    source = "corpus CT (totalseg-abdomen)" if image is not None else "synthetic CT"
    if image is None:
        image = synthetic_ct()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)

    bits = 12 if source.startswith("corpus") else 16
    print(f"{image.shape[0]}x{image.shape[1]} {image.dtype} slice ({source}, {bits} bits), torch {torch.__version__}, "
          f"median of {args.repeats} runs; untrained families at N={args.N} M={args.M} unless a checkpoint is named")
    print("| codec | threads | encode s | decode s | bytes | bpp |")
    print("|---|---|---|---|---|---|")
    codecs = {"medvae (shipped default)": medvae.load("medvae")}
    for name in medvae.models.available():
        codecs[name] = medvae.Codec(load_model(checkpoints[name]) if name in checkpoints else medvae.models.create(name, N=args.N, M=args.M))
    shipped_bpp = None
    for label, codec in codecs.items():
        for n in threads:
            torch.set_num_threads(n)
            enc, data = median_time(lambda: codec.compress(image, bits_stored=bits), args.repeats)
            dec, _ = median_time(lambda: codec.decompress(data), args.repeats)
            shipped_bpp = shipped_bpp or 8 * len(data) / image.size
            print(f"| {label} | {n} | {enc:.3f} | {dec:.3f} | {len(data)} | {8 * len(data) / image.size:.3f} |", flush=True)
    for point in registry.expand(f"jpeg2000=lossless,{shipped_bpp:.3f}"):
        enc, data = median_time(lambda: point.encode(image, bits), args.repeats)
        dec, _ = median_time(lambda: point.decode(data), args.repeats)
        print(f"| {point.label} | 1 | {enc:.3f} | {dec:.3f} | {len(data)} | {8 * len(data) / image.size:.3f} |")


if __name__ == "__main__":
    main()
