#!/usr/bin/env python
"""Trained variable-rate weights against shipped ones, per modality, before shipping them.

Codes every third CT test slice, the MR test slice and the test radiographs of the corpus with
its training extras at qualities 1 to 7 with each weights file alone (no choice between
weights), real bytes and PSNR at the stored bit depth, and prints each file's per-image
BD-rate against the first, over each image's shared PSNR range on the points within 0.05–1 bpp
(:func:`medvae.evaluation.bdrate.bd_rate_per_image`, PCHIP), per modality. Negative: fewer bits.
A 3480×4240 radiograph takes most of the time; ``--modalities CT,MR`` leaves the radiographs out.

    python benchmarks/lossy_weights.py medvae/weights/medvae-ctx-082199e0.pt runs/RUN/last.pt [--every 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import medvae
from medvae.checkpoint import load_model
from medvae.errors import InputError
from medvae.evaluation.bdrate import bd_rate_per_image
from medvae.evaluation.datasets import load_images
from medvae.evaluation.learned import Learned
from medvae.evaluation.run import evaluate
from medvae.io.slices import Slice

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus-plus/MANIFEST.csv"
QUALITIES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)


def measure(codec: medvae.Codec, images: Sequence[Slice], label: str, qualities: Sequence[float] = QUALITIES) -> list[dict[str, Any]]:
    """The evaluation rows (real bytes, PSNR at the stored bit depth) of ``codec``'s files at
    each quality, its curve named ``label``."""
    points = [Learned(codec, label, f"q{q:g}", quality=float(q)) for q in qualities]
    return evaluate(images, points, progress=True).rows


def bd_rates(rows: list[dict[str, Any]], reference: str, test: str, low: float = 0.05, high: float = 1.0) -> dict[str, tuple[float, int]]:
    """Per modality: (mean per-image BD-rate % of ``test`` against ``reference`` on the points
    within [low, high] bpp, images used), PCHIP as in the other benchmarks; NaN and 0 images
    where no image has two usable curves there."""
    table = {}
    for modality in dict.fromkeys(r["modality"] for r in rows):
        chosen = [r for r in rows if r["modality"] == modality and low <= float(r["bpp"]) <= high]
        try:
            mean, used, _ = bd_rate_per_image(chosen, reference, test, "psnr", "pchip")
        except InputError:
            mean, used = float("nan"), 0
        table[modality] = (mean, used)
    return table


def held_out_images(every: int, modalities: Sequence[str]) -> list[Slice]:
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
    images = held_out_images(args.every, args.modalities.split(","))
    rows = []
    for path in args.weights:
        rows += measure(medvae.Codec(load_model(path)), images, str(path))
    reference = str(args.weights[0])
    for path in args.weights[1:]:
        for modality, (mean, used) in bd_rates(rows, reference, str(path)).items():
            print(f"{path} vs {reference}: {modality} {mean:+.1f} % BD-rate ({used} images)")


if __name__ == "__main__":
    main()
