#!/usr/bin/env python
"""A compact copy of a manifest's training and validation data, for a machine that has no corpus.

A leased GPU machine gets only what travels with the working tree (a size limit of tens of
MB), so this copies the ``train`` and ``val`` rows of a manifest into ``OUT`` with a new
``MANIFEST.csv``, and thins every NIfTI volume of more than ``--max-slices`` slices to
evenly spaced slices (neighbouring CT slices are nearly the same image). Files are copied
unchanged otherwise; the test split never travels.

    python tools/pack_training_data.py ../shared/data/corpus-plus/MANIFEST.csv gpu-data --max-slices 48
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np


def thinned_nifti(source: Path, target: Path, max_slices: int) -> int:
    """Write ``source`` with at most ``max_slices`` evenly spaced slices of its last axis; their count."""
    import nibabel as nib

    image = nib.load(str(source))
    if image.ndim != 3 or image.shape[2] <= max_slices:
        shutil.copyfile(source, target)
        return image.shape[2] if image.ndim == 3 else 1
    keep = np.unique(np.linspace(0, image.shape[2] - 1, max_slices).round().astype(int))
    pixels = np.asarray(image.dataobj.get_unscaled())[:, :, keep]
    header = image.header.copy()
    header.set_data_dtype(pixels.dtype)
    thinned = nib.Nifti1Image(pixels, image.affine, header)
    thinned.header.set_slope_inter(*image.header.get_slope_inter())
    nib.save(thinned, str(target))
    return len(keep)


def pack(manifest: Path, out: Path, max_slices: int, splits: tuple[str, ...] = ("train", "val")) -> list[dict[str, str]]:
    """Copy ``splits`` of ``manifest`` into ``out`` (see the module docstring); the new rows."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty: give a new folder")
    with manifest.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["split"].strip().lower() in splits]
    if not rows:
        raise SystemExit(f"{manifest} has no rows in the splits {', '.join(splits)}")
    kept = []
    for row in rows:
        source, target = manifest.parent / row["path"], out / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if row["path"].endswith((".nii", ".nii.gz")):
            count = thinned_nifti(source, target, max_slices)
            row = {**row, "note": f"{row.get('note', '')} (thinned to {count} slices)".strip(), "sha256": ""}
        else:
            shutil.copyfile(source, target)
        kept.append(row)
    with (out / "MANIFEST.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-slices", type=int, default=48, help="slices kept of a NIfTI volume")
    args = parser.parse_args()
    rows = pack(args.manifest, args.out, args.max_slices)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(rows)} files, {size / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
