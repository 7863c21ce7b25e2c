#!/usr/bin/env python
"""Ship an ``rnn-conv`` training run as the packaged ``rnn-conv`` weights.

Counts the bit tables on corpus training slices (:func:`medvae.models.rnn_conv.fit_bit_tables`:
each iteration's, channel's and context's frequency of ones), calibrates the exact plan on the
same slices, and exports ``medvae/weights/rnn-conv-q1.pt`` with its index entry
(``tools/export_weights.py``). Training: ``python train.py --config configs/corpus-cpu-rnn-conv.yaml``.

    python benchmarks/ship_rnn_conv.py [CHECKPOINT] [--max-slices 4]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.export_weights import export  # noqa: E402

MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
CONFIG = "configs/corpus-cpu-rnn-conv.yaml"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=REPO / "runs/corpus-cpu-rnn-conv/last.pt")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--max-slices", type=int, default=4, help="training slices per volume")
    parser.add_argument("--wall-time", default="", help="training wall time, for the record")
    args = parser.parse_args(argv)

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = load_model(args.checkpoint)
    slices = load_images([args.manifest], "train", max_slices=args.max_slices)
    images = [NormalizedImage(s.pixels, *default_value_range(s.pixels), model.downsampling_factor).tensor().float() for s in slices]
    print(f"counting bit tables and calibrating on {len(slices)} training slices")
    fit_bit_tables(model, images)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "rnn-conv.pt"
        save_model(model, prepared, calibration=[s.pixels for s in slices], config=state.get("config"), step=state.get("step"))
        notes = {
            "command": f"python train.py --config {CONFIG}",
            "budget": f"{state.get('step')} steps from scratch on 2 CPU cores (float32, batch 16, 64x64 crops)"
            + (f", {args.wall_time}" if args.wall_time else ""),
            "bit_tables": f"counted on {len(slices)} corpus training slices (python benchmarks/ship_rnn_conv.py)",
        }
        path = export(prepared, 1, default_quality=1, notes=notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
