#!/usr/bin/env python
"""Do files decode to the same pixels on other CPUs and thread counts? A cross-ISA table.

Codes corpus CT test slices with the shipped ``medvae`` ladder on this machine, decodes
every file here (the reference), then decodes them again in fresh processes that limit
PyTorch to the kernels an older CPU would use, and with other thread counts:

    AVX2            ONEDNN_MAX_CPU_ISA=AVX2  ATEN_CPU_CAPABILITY=avx2     1 thread
    SSE4.1          ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default  1 thread
    2 threads       (this CPU)                                          2 threads
    AVX2, 2 thr.    ONEDNN_MAX_CPU_ISA=AVX2  ATEN_CPU_CAPABILITY=avx2     2 threads

and prints, per quality and setting, how many files decode to identical pixels, and
for the others the pixels that differ and the largest error. A decode that raises
(for example the decoded-pixel checksum of format 2) counts as "error", never as a
silently different image.

    python benchmarks/exactness.py [--slices 6] [--qualities 1,2,3,4,5,6,7] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = {
    "AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, 1),
    "SSE4.1": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}, 1),
    "2 threads": ({}, 2),
    "AVX2, 2 threads": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, 2),
}
MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def decode_folder(folder: Path, threads: int) -> None:
    """Decode every ``*.mvae`` in ``folder`` to ``<name>.<tag>.npy`` (or ``.err`` with the message)."""
    import torch

    import medvae

    torch.set_num_threads(threads)
    tag = os.environ.get("EXACTNESS_TAG", "here")
    for path in sorted(folder.glob("*.mvae")):
        try:
            np.save(folder / f"{path.stem}.{tag}.npy", medvae.decompress(path.read_bytes()))
        except medvae.MedVAEError as exc:
            (folder / f"{path.stem}.{tag}.err").write_text(str(exc))


def encode(folder: Path, qualities: list[int], slices: int) -> list[str]:
    """Code ``slices`` CT test slices at each quality into ``folder``; return the file stems."""
    import medvae
    from medvae.evaluation.datasets import load_images

    images = load_images([MANIFEST], "test", modality="CT", max_slices=slices, limit=slices)
    stems = []
    for q in qualities:
        for i, image in enumerate(images):
            stem = f"q{q}-s{i}"
            (folder / f"{stem}.mvae").write_bytes(medvae.compress(image.pixels, q, bits_stored=image.bits_stored))
            stems.append(stem)
    return stems


def compare(folder: Path, stem: str, tag: str) -> tuple[str, int, int]:
    """(verdict, pixels that differ, largest absolute error) of one decode against the reference."""
    if (folder / f"{stem}.{tag}.err").exists():
        return "error", 0, 0
    reference = np.load(folder / f"{stem}.here.npy").astype(np.int64)
    decoded = np.load(folder / f"{stem}.{tag}.npy").astype(np.int64)
    diff = np.abs(decoded - reference)
    n = int((diff > 0).sum())
    return ("identical" if n == 0 else "differs"), n, int(diff.max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--qualities", default="1,2,3,4,5,6,7")
    parser.add_argument("--out", type=Path, help="keep the files and decodes here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the table as JSON too")
    parser.add_argument("--decode", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.decode:
        return decode_folder(args.decode, args.threads)

    import medvae

    qualities = [int(q) for q in args.qualities.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        stems = encode(folder, qualities, args.slices)
        decode_folder(folder, 1)
        for tag, (env, threads) in SETTINGS.items():
            child_env = {**os.environ, **env, "EXACTNESS_TAG": tag.replace(" ", "_").replace(",", "")}
            subprocess.run([sys.executable, __file__, "--decode", str(folder), "--threads", str(threads)], check=True, env=child_env)
        rows = {}
        for stem in stems:
            rows[stem] = {tag: compare(folder, stem, tag.replace(" ", "_").replace(",", "")) for tag in SETTINGS}

    print(f"medvae {medvae.__version__}: {args.slices} CT test slices x {len(qualities)} qualities, decoded under {len(SETTINGS)} settings")
    print(f"{'file':10s}" + "".join(f"{tag:>22s}" for tag in SETTINGS))
    for stem, row in rows.items():
        cells = [v if v != "differs" else f"{n} px, max {e}" for v, n, e in row.values()]
        print(f"{stem:10s}" + "".join(f"{c:>22s}" for c in cells))
    total = len(rows) * len(SETTINGS)
    for verdict in ("identical", "differs", "error"):
        count = sum(v == verdict for row in rows.values() for v, _, _ in row.values())
        print(f"{verdict:>10s}: {count} of {total} decodes")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
