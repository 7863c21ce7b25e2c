#!/usr/bin/env python
"""Tissue quality with scanner padding or one extreme pixel, coded as exceptions or not.

For corpus CT test slices (in HU, int16) with the area outside the inscribed
field-of-view circle set to air, codes with the shipped default weights:

* the slice itself (the reference);
* the slice with that area stored as padding, −2048 and −32768, as scanners do;
* the slice with one pixel at 32767 (metal, a burned-in marker);

each the way MedVAE codes it (padding and extremes as exact exceptions,
:mod:`medvae.exceptions`) and the way release 0.1 did (one intensity mapping over all
pixels, forced here with an explicit ``value_range``). Prints mean bytes and tissue PSNR
(12 bits, inside the circle, the extreme pixel left out) and the largest tissue error.

    python benchmarks/padding.py [--slices 6] [--quality 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import medvae
from medvae.evaluation.datasets import load_images

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


def tissue_figures(reference: np.ndarray, decoded: np.ndarray, where: np.ndarray) -> tuple[float, int]:
    """(PSNR at 12 bits, largest absolute error) over ``where``."""
    error = reference[where].astype(np.float64) - decoded[where]
    return 10 * np.log10(4095**2 / np.mean(error**2)), int(np.abs(error).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--quality", type=int, default=None)
    args = parser.parse_args(argv)
    codec = medvae.load("medvae", args.quality)
    slices = load_images([MANIFEST], "test", modality="CT", max_slices=args.slices, limit=args.slices)
    cases = ("reference", "padding -2048", "padding -32768", "one pixel 32767")
    rows: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
    for s in slices:
        hu = (s.pixels.astype(np.int32) * s.slope + s.intercept).clip(-1024, 3071).astype(np.int16)
        h, w = hu.shape
        yy, xx = np.mgrid[:h, :w]
        fov = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (min(h, w) / 2) ** 2
        reference = np.where(fov, hu, np.int16(-1024)).astype(np.int16)
        spot = (h // 3, w // 3)
        tissue = fov.copy()
        tissue[spot] = False
        for case in cases:
            image = reference.copy()
            if case.startswith("padding"):
                image[~fov] = int(case.split()[1])
            elif case.startswith("one pixel"):
                image[spot] = 32767
            for how, kwargs in (("exceptions", {}), ("one mapping", {"value_range": (int(image.min()), int(image.max()))})):
                data = codec.compress(image, **kwargs)
                decoded = codec.decompress(data)
                if how == "exceptions" and case.startswith("padding"):
                    assert np.array_equal(decoded[~fov], image[~fov]), "padding not restored exactly"
                if how == "exceptions" and case.startswith("one pixel"):
                    assert decoded[spot] == image[spot], "extreme pixel not restored exactly"
                rows.setdefault((case, how), []).append((len(data), *tissue_figures(reference, decoded, tissue)))
    print(f"{len(slices)} CT test slices (HU), shipped medvae, quality {args.quality or 'default'}; "
          "tissue = inside the field of view, the extreme pixel left out")
    print("| slice | coded as | bytes | tissue PSNR | max tissue error |")
    print("|---|---|---|---|---|")
    base_bytes = np.mean([r[0] for r in rows[("reference", "exceptions")]])
    for case in cases:
        for how in ("exceptions", "one mapping"):
            r = np.array(rows[(case, how)], dtype=float)
            print(f"| {case} | {how} | {r[:, 0].mean():.0f} ({100 * (r[:, 0].mean() / base_bytes - 1):+.1f} %) | {r[:, 1].mean():.2f} dB | {r[:, 2].max():.0f} |")


if __name__ == "__main__":
    main()
