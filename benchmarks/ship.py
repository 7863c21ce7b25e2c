#!/usr/bin/env python
"""Ship a training run of ``medvae-vr``, ``medvae-ctx`` or ``rnn-conv`` as the packaged weights of that family.

Calibrates the exact plan on corpus training slices (:func:`medvae.exact.calibrate`; for the
variable-rate families at every level) and exports ``medvae/weights/<family>.pt`` (``medvae-vr``, ``medvae-ctx``) or
``rnn-conv-q1.pt`` with its index entry (``tools/export_weights.py``). For ``rnn-conv`` it first
counts the bit tables on the same slices (:func:`medvae.models.rnn_conv.fit_bit_tables`: each
iteration's, channel's and context's frequency of ones).

    python benchmarks/ship.py medvae-vr [CHECKPOINT] [--max-slices 4] [--wall-time TEXT]
    python benchmarks/ship.py medvae-ctx [CHECKPOINT] [--max-slices 4] [--wall-time TEXT] [--config FILE --budget TEXT] [--alternative]
    python benchmarks/ship.py rnn-conv [CHECKPOINT] [--max-slices 4] [--wall-time TEXT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from medvae.checkpoint import load_model, save_model
from medvae.evaluation.datasets import load_images
from medvae.exact.image import NormalizedImage
from medvae.intensity import default_value_range
from medvae.models.rnn_conv import fit_bit_tables
from medvae.models.variable_rate import DEFAULT_QUALITY

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.export_weights import export  # noqa: E402

MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
#: The corpus with the training extras (``tools/fetch_samples.py``), which ``medvae-ctx`` trains on.
MANIFEST_PLUS = REPO.parent / "shared/data/corpus-plus/MANIFEST.csv"
#: Per family: its training command, budget (before the steps), default quality.
FAMILIES = {
    "medvae-vr": ("python train.py --config configs/corpus-cpu-medvae-vr.yaml --amp",
                  "bfloat16 autocast, 2 CPU cores, batch 8, 128x128 crops, fine-tuned from the shipped medvae q5 weights",
                  DEFAULT_QUALITY),
    "medvae-ctx": ("python train.py --config configs/corpus-cpu-medvae-ctx.yaml --amp",
                   "bfloat16 autocast, 2 CPU cores, batch 8, 128x128 crops of CT, MR and radiographs (a patient's "
                   "share growing as the square root of its slices), fine-tuned from the shipped medvae-vr weights",
                   DEFAULT_QUALITY),
    "rnn-conv": ("python train.py --config configs/corpus-cpu-rnn-conv.yaml",
                 "from scratch on 2 CPU cores (float32, batch 16, 64x64 crops)", 1),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None, help="default: runs/corpus-cpu-<family>/last.pt")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="calibration slices' manifest (default: the corpus with extras for medvae-ctx, else the corpus)")
    parser.add_argument("--max-slices", type=int, default=4, help="training slices per volume")
    parser.add_argument("--wall-time", default="", help="training wall time, for the record")
    parser.add_argument("--config", help="the run's training config, when not the family's first (for the record)")
    parser.add_argument("--budget", help="how the run was trained, when not as the family's first (for the record)")
    parser.add_argument("--alternative", action="store_true",
                        help="ship as alternative weights of the family (the encoder chooses per image), not in place of its weights")
    args = parser.parse_args(argv)
    command, budget, quality = FAMILIES[args.family]
    if args.config:
        command = f"python train.py --config {args.config}" + (" --amp" if "--amp" in command else "")
    budget = args.budget or budget
    checkpoint = args.checkpoint or REPO / f"runs/corpus-cpu-{args.family}/last.pt"

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = load_model(checkpoint)
    if model.model_name != args.family:
        raise SystemExit(f"{checkpoint} holds a {model.model_name!r} model, not {args.family!r}")
    manifest = args.manifest or (MANIFEST_PLUS if args.family == "medvae-ctx" and MANIFEST_PLUS.is_file() else MANIFEST)
    slices = load_images([manifest], "train", max_slices=args.max_slices)
    this = f"python benchmarks/ship.py {args.family}"
    notes = {
        "command": command,
        "budget": f"{state.get('step')} steps ({budget})" + (f", {args.wall_time}" if args.wall_time else ""),
        "exact": {"calibration": f"{len(slices)} corpus training slices and medvae.exact.synthetic_images()", "command": this},
    }
    print(f"preparing {args.family} on {len(slices)} training slices")
    if args.family == "rnn-conv":
        fit_bit_tables(model, [NormalizedImage(s.pixels, *default_value_range(s.pixels), model.downsampling_factor).tensor().float()
                               for s in slices])
        notes["bit_tables"] = f"counted on {len(slices)} corpus training slices ({this})"
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / f"{args.family}.pt"
        save_model(model, prepared, calibration=[s.pixels for s in slices], config=state.get("config"), step=state.get("step"))
        path = export(prepared, quality, default_quality=quality, notes=notes, alternative=args.alternative)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
