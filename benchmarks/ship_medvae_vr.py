#!/usr/bin/env python
"""Ship a ``medvae-vr`` training run as the packaged variable-rate weights.

Calibrates the exact plan on corpus training slices at every level (:func:`medvae.exact.calibrate`)
and exports ``medvae/weights/medvae-vr.pt`` with its index entry (``tools/export_weights.py``).
Training: ``python train.py --config configs/corpus-cpu-medvae-vr.yaml --amp``.

    python benchmarks/ship_medvae_vr.py [CHECKPOINT] [--max-slices 4] [--wall-time TEXT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from medvae.checkpoint import load_model, save_model
from medvae.evaluation.datasets import load_images
from medvae.models.variable_rate import DEFAULT_QUALITY

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.export_weights import export  # noqa: E402

MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
CONFIG = "configs/corpus-cpu-medvae-vr.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=REPO / "runs/corpus-cpu-medvae-vr/last.pt")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--max-slices", type=int, default=4, help="training slices per volume")
    parser.add_argument("--wall-time", default="", help="training wall time, for the record")
    args = parser.parse_args(argv)

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = load_model(args.checkpoint)
    slices = load_images([args.manifest], "train", max_slices=args.max_slices)
    print(f"calibrating on {len(slices)} training slices at every level")
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "medvae-vr.pt"
        save_model(model, prepared, calibration=[s.pixels for s in slices], config=state.get("config"), step=state.get("step"))
        notes = {
            "command": f"python train.py --config {CONFIG} --amp",
            "budget": f"{state.get('step')} steps (bfloat16 autocast, 2 CPU cores, batch 8, 128x128 crops), fine-tuned "
            "from the shipped medvae q5 weights" + (f", {args.wall_time}" if args.wall_time else ""),
            "lmbdas": model.config["lmbdas"],
            "exact": {"calibration": f"{len(slices)} corpus training slices at every level and medvae.exact.synthetic_images()",
                      "command": "python benchmarks/ship_medvae_vr.py"},
        }
        path = export(prepared, DEFAULT_QUALITY, notes=notes)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
