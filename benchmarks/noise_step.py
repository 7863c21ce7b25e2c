#!/usr/bin/env python
"""The step of y for a slice coded alone: what each step costs, and what the noise rule picks.

A slice coded alone with a residual layer quantizes its base latent y with the step its noise
calls for (:func:`medvae.prediction.noise_step`, formats 27 to 29). This codes one slice per
patient of the corpus (the middle slice of each volume of the train and val splits, and the
first of each test patient) with the shipped default at each bound τ, once with y's step forced
to each of ``--steps`` (in quarters; through the rule's hook, so the files are what the codec
writes at that step), and prints per image the rule's step, the best step tried, and both
against the unit step (real bytes). The rule was fitted to all these rows (test ones included).

    python benchmarks/noise_step.py [--splits val,train,test] [--steps 4,5,6,7,8,10] [--max-error 0,1,2,4,8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import medvae
from medvae import prediction
from medvae.errors import InputError
from medvae.evaluation.datasets import load_images

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
MODALITIES = ("CT", "MR", "CR", "DX")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _slices(split: str) -> list:
    """One slice per patient of the split: a volume's middle slice (the first of a test patient's)."""
    picked = []
    for modality in MODALITIES:
        try:
            images = load_images([MANIFEST], split, modality=modality)
        except InputError:  # no such modality in this split
            continue
        by_patient: dict[str, list] = {}
        for image in images:
            by_patient.setdefault(image.patient, []).append(image)
        picked += [slices[0] if split == "test" else slices[len(slices) // 2] for slices in by_patient.values()]
    return picked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", default="val,train,test")
    parser.add_argument("--steps", type=_ints, default=[4, 5, 6, 7, 8, 10], metavar="Q,Q,…")
    parser.add_argument("--max-error", type=_ints, default=[0, 1, 2, 4, 8], metavar="T,T,…")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/noise-step.md"))
    args = parser.parse_args(argv)
    codec, rule = medvae.load("medvae"), prediction.noise_step
    lines = [
        f"| image | split | noise step | best step of {', '.join(f'{q / 4:g}' for q in args.steps)} "
        f"| noise step vs unit step, τ = {' / '.join(map(str, args.max_error))} | best step vs unit step |",
        "|---|---|---|---|---|---|",
    ]
    print(lines[0], flush=True)
    try:
        for split in args.splits.split(","):
            for image in _slices(split):
                prediction.noise_step = rule
                step = medvae.read_header(codec.compress(image.pixels, max_error=0)).base_step  # the rule's, as the file records it
                sizes: dict[int, dict[int, int]] = {tau: {} for tau in args.max_error}
                for tau in args.max_error:
                    for q in args.steps:
                        prediction.noise_step = lambda pixels, value_range, q=q: q  # y at step q
                        sizes[tau][q] = len(codec.compress(image.pixels, max_error=tau))
                best = {tau: min(sizes[tau], key=sizes[tau].get) for tau in args.max_error}

                def change(tau: int, q: int) -> str:
                    return f"{100 * (sizes[tau][q] / sizes[tau][prediction.UNIT_STEP] - 1):+.1f}" if q in sizes[tau] else "?"

                line = (f"| {image.patient} ({image.modality}, {image.shape[0]}×{image.shape[1]}) | {split} | {step / 4:g} "
                        f"| {'/'.join(sorted({f'{q / 4:g}' for q in best.values()}))} "
                        f"| {' / '.join(change(tau, step) for tau in args.max_error)} % "
                        f"| {' / '.join(change(tau, best[tau]) for tau in args.max_error)} % |")
                lines.append(line)
                print(line, flush=True)
                Path(args.out).write_text(f"$ python benchmarks/noise_step.py {' '.join(sys.argv[1:] if argv is None else argv)}\n\n" + "\n".join(lines) + "\n")  # so far
    finally:
        prediction.noise_step = rule
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
