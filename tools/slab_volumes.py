"""Add overlapping-slab copies of a manifest's training CT volumes (simulated overlapping reconstruction).

Scanners often reconstruct slices thicker than their spacing (3 mm slices every 2 mm, as the
corpus' CT test series): neighbouring slices then share part of their data, and so part of
their noise, which a series residual model can predict from the slices before. The corpus'
training volumes are contiguous (thickness = spacing), so their noise is independent from slice
to slice and a model trained on them never sees that. This tool writes, for each multi-slice CT
volume of the ``train`` split, a volume whose slice k is the mean of slices k .. k + width − 1
(rounded; each slab shares width − 1 slices with the next), as a 3-D ``.npy`` beside the
manifest, and a manifest listing the original rows and those volumes (same patient, so the
patient-level split holds).

    python tools/slab_volumes.py ../shared/data/corpus-plus/MANIFEST.csv --out MANIFEST-slab2.csv
    python tools/slab_volumes.py ../shared/data/corpus-plus/MANIFEST-slab2.csv --out MANIFEST-slab2-slab3s2.csv --width 3 --stride 2

(the second adds slabs of 3 slices every 2, which share a third of their data as the CT test
series' 3 mm slices every 2 mm do, to the first's manifest; slab volumes are not slabbed again).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvae.io import read  # noqa: E402
from medvae.io.manifest import MANIFEST_COLUMNS  # noqa: E402


def slabs(volume: np.ndarray, width: int, stride: int = 1) -> np.ndarray:
    """Slice k of the result is the mean of ``volume``'s slices stride·k .. stride·k + width − 1,
    rounded to the nearest integer (halves to even), in ``volume``'s dtype: slabs of ``width``
    slices every ``stride`` (3 every 2: neighbouring slabs share a third, as 3 mm slices every 2 mm)."""
    if not 2 <= width <= len(volume):
        raise ValueError(f"a slab takes 2 to {len(volume)} slices of this volume, not {width}")
    if not 1 <= stride < width:
        raise ValueError(f"slabs of {width} slices overlap at a stride of 1 to {width - 1}, not {stride}")
    last = (len(volume) - width) // stride * stride  # the last slab's first slice
    total = sum(volume[k : last + k + 1 : stride].astype(np.int64) for k in range(width))
    return np.round(total / width).astype(volume.dtype)


def add_slabs(manifest: Path, out: Path, width: int = 2, stride: int = 1) -> list[dict]:
    """Write the slab volumes and the manifest ``out`` (beside ``manifest``); returns the new rows.
    Slab volumes the manifest already lists (an earlier run's) are kept, not slabbed again.
    Refuses to overwrite ``out`` or a slab volume."""
    if out.exists():
        raise SystemExit(f"{out} exists; choose another --out")
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or MANIFEST_COLUMNS, list(reader)
    added = []
    for row in rows:
        if row["split"].strip().lower() != "train" or row["modality"].strip().upper() != "CT" or "tools/slab_volumes.py" in row["source"]:
            continue
        stack = read(manifest.parent / row["path"], modality="CT")
        if len(stack.pixels) <= width:
            continue
        target = Path(f"slab{width}" + (f"s{stride}" if stride > 1 else "")) / row["patient"] / (Path(row["path"]).name.split(".")[0] + ".npy")
        if (manifest.parent / target).exists():
            raise SystemExit(f"{manifest.parent / target} exists; remove it first")
        (manifest.parent / target).parent.mkdir(parents=True, exist_ok=True)
        volume = slabs(np.asarray(stack.pixels), width, stride)
        np.save(manifest.parent / target, volume)
        added.append({**{k: "" for k in fields}, "path": target.as_posix(), "modality": "CT", "patient": row["patient"],
                      "split": "train", "source": f"{row['path']}, overlapping slabs of {width} slices every {stride} (tools/slab_volumes.py)",
                      "note": "x".join(map(str, volume.shape[::-1]))})
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows + added)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", required=True, help="name of the manifest to write beside MANIFEST")
    parser.add_argument("--width", type=int, default=2, help="slices per slab (default 2)")
    parser.add_argument("--stride", type=int, default=1, help="slices from one slab to the next (default 1)")
    args = parser.parse_args(argv)
    added = add_slabs(args.manifest, args.manifest.parent / args.out, args.width, args.stride)
    print(f"{len(added)} slab volume(s) added: {args.manifest.parent / args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
