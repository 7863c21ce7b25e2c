#!/usr/bin/env python
"""Trained variable-rate weights against shipped ones, per modality, before shipping them.

Codes every third CT test slice, the MR test slice and the test radiographs of the corpus with
its training extras at qualities 1 to 7 with each weights file alone (no choice between
weights), real bytes and PSNR at the stored bit depth, and prints each file's per-image
BD-rate against the first, over each image's shared PSNR range on the points within 0.05–1 bpp
(:func:`medvae.evaluation.bdrate.bd_rate_per_image`), per modality. Negative: fewer bits.
A 3480×4240 radiograph takes most of the time; ``--modalities CT,MR`` leaves the radiographs out.

    python benchmarks/lossy_weights.py medvae/weights/medvae-ctx-082199e0.pt runs/RUN/last.pt [--every 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import medvae
from medvae import metrics
from medvae.checkpoint import load_model
from medvae.evaluation.bdrate import bd_rate_per_image
from medvae.evaluation.datasets import load_images
from medvae.io.slices import Slice

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus-plus/MANIFEST.csv"
QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)


def measure(codec: medvae.Codec, images: Sequence[Slice], label: str, qualities: Sequence[float] = QUALITIES) -> list[dict[str, Any]]:
    """One row per image and quality: real bpp and PSNR of ``codec``'s files."""
    rows = []
    for index, image in enumerate(images):
        for quality in qualities:
            data = codec.compress(image.pixels, quality=quality, bits_stored=image.bits_stored)
            decoded = codec.decompress(data)
            rows.append({"codec": label, "file": f"{image.modality}-{index}", "slice": 0, "modality": image.modality,
                         "quality": quality, "bpp": metrics.bpp(len(data), image.pixels.shape),
                         "psnr": metrics.psnr(image.pixels, decoded, image.bits_stored)})
    return rows


def bd_rates(rows: list[dict[str, Any]], reference: str, test: str, low: float = 0.05, high: float = 1.0) -> dict[str, tuple[float, int]]:
    """Per modality: (mean per-image BD-rate % of ``test`` against ``reference`` within [low, high] bpp, images)."""
    table = {}
    for modality in dict.fromkeys(r["modality"] for r in rows):
        chosen = [r for r in rows if r["modality"] == modality and low <= r["bpp"] <= high]
        mean, used, _ = bd_rate_per_image(chosen, reference, test)
        table[modality] = (mean, used)
    return table


def test_images(every: int, modalities: Sequence[str]) -> list[Slice]:
    """Every ``every``-th CT test slice and every test slice of the other ``modalities``."""
    images = []
    for modality in modalities:
        found = load_images([MANIFEST], "test", modality=modality)
        images += found[::every] if modality == "CT" else found
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", type=Path, help="the reference first, then the weights to compare")
    parser.add_argument("--every", type=int, default=3, help="every N-th CT test slice")
    parser.add_argument("--modalities", default="CT,MR,CR,DX")
    args = parser.parse_args()
    images = test_images(args.every, args.modalities.split(","))
    rows = []
    for path in args.weights:
        rows += measure(medvae.Codec(load_model(path)), images, str(path))
        print(f"coded {len(images)} images with {path}", flush=True)
    reference = str(args.weights[0])
    for path in args.weights[1:]:
        for modality, (mean, used) in bd_rates(rows, reference, str(path)).items():
            print(f"{path} vs {reference}: {modality} {mean:+.1f} % BD-rate ({used} images)")


if __name__ == "__main__":
    main()
