#!/usr/bin/env python
"""A compact copy of a manifest's training and validation data, for a machine that has no corpus.

A leased GPU machine gets only what travels with the working tree (a size limit of tens of
MB), so this copies the ``train`` and ``val`` rows of a manifest into ``OUT`` with a new
``MANIFEST.csv``, and thins every NIfTI volume of more than ``--max-slices`` slices to
evenly spaced slices (neighbouring CT slices are nearly the same image), keeping its header
(scaling, affine). Other files are copied unchanged; the test split never travels.

    python tools/pack_training_data.py ../shared/data/corpus-plus/MANIFEST.csv gpu-data --max-slices 45
    python tools/pack_training_data.py ../shared/data/corpus-plus/MANIFEST.csv gpu-data-residual --max-slices 45 --modalities CT,MR
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import medvae.io as io
from medvae.errors import InputError
from medvae.io.manifest import read_manifest
from medvae.io.slices import evenly_spaced_indices
from medvae.io.writers import write_nifti


def thin_nifti(source: Path, target: Path, max_slices: int) -> tuple[int, int]:
    """Write ``source``'s evenly spaced slices, at most ``max_slices``, with its header to
    ``target``; (slices kept, slices it had)."""
    stack = io.read(source)
    keep = evenly_spaced_indices(len(stack.pixels), max_slices)
    write_nifti(stack.pixels[keep], target, stack.header)
    return len(keep), len(stack.pixels)


def pack(
    manifest: Path, out: Path, max_slices: int, splits: tuple[str, ...] = ("train", "val"), modalities: tuple[str, ...] | None = None,
) -> list[dict[str, str]]:
    """Copy ``splits`` of ``manifest`` into ``out`` (see the module docstring), only the rows of
    ``modalities`` when given (e.g. CT and MR for the residual model); the new rows.

    Raises:
        InputError: A bad manifest (:func:`medvae.io.manifest.read_manifest`), no rows in
            ``splits`` (and ``modalities``), a non-empty ``out``, or a row whose path leads outside its folder.
    """
    read_manifest(manifest)  # columns, split names, patients in one split
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: give a new folder")
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(dict.fromkeys([*(reader.fieldnames or []), "note", "sha256"]))
        rows = [row for row in reader if row["split"].strip().lower() in splits
                and (modalities is None or row["modality"].strip().upper() in modalities)]
    if not rows:
        wanted = f" of {', '.join(modalities)}" if modalities else ""
        raise InputError(f"{manifest} has no rows{wanted} in the splits {', '.join(splits)}")
    kept = []
    for row in rows:
        source, target = manifest.parent / row["path"], out / row["path"]
        if not target.resolve().is_relative_to(out.resolve()):
            raise InputError(f"{manifest}: the path {row['path']!r} leads outside the manifest's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        if io.detect_format(source) == "nifti":
            count, total = thin_nifti(source, target, max_slices)
            if count < total:  # a new file: its note says so, and the source's checksum no longer applies
                row = {**row, "note": f"{row.get('note') or ''} (thinned to {count} of {total} slices)".strip(), "sha256": ""}
        else:
            shutil.copyfile(source, target)
        kept.append(row)
    with (out / "MANIFEST.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(kept)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-slices", type=int, default=48, help="slices kept of a NIfTI volume")
    parser.add_argument("--modalities", help="only these modalities, comma-separated (e.g. CT,MR); default all")
    args = parser.parse_args()
    modalities = tuple(m.strip().upper() for m in args.modalities.split(",")) if args.modalities else None
    try:
        rows = pack(args.manifest, args.out, args.max_slices, modalities=modalities)
    except InputError as exc:
        raise SystemExit(f"pack_training_data: {exc}") from None
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(rows)} files, {size / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
