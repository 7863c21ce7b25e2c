#!/usr/bin/env python
"""Give the shipped weights their exact form: calibrate each quality and store the plan with it.

The float weights and the entropy coder's tables stay as they are (so files written by
earlier releases still find and decode them); each weights file gains its exact plan
(:func:`medvae.exact.calibrate`, on corpus training slices of every modality and the
synthetic patterns), and its index entry gains the fingerprint format-2 files name
(``fingerprint``), keeping the old one as ``format1_fingerprint``.

    python benchmarks/convert_exact.py [--qualities 1,...,7] [--max-slices 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medvae import zoo
from medvae.checkpoint import atomic_torch_save, exact_fingerprint, fingerprint, load_model, model_record
from medvae.exact import EXACT_VERSION, calibrate
from medvae.evaluation.datasets import load_images

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"
COMMAND = "python benchmarks/convert_exact.py"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--qualities", default=",".join(map(str, zoo.qualities("medvae"))))
    parser.add_argument("--max-slices", type=int, default=4, help="slices per training volume")
    args = parser.parse_args(argv)

    slices = load_images([args.manifest], "train", max_slices=args.max_slices)
    print(f"calibrating on {len(slices)} training slices ({', '.join(sorted({s.modality for s in slices}))}) and the synthetic patterns")
    for quality in (int(q) for q in args.qualities.split(",")):
        path = zoo.shipped_path("medvae", quality)
        index_path = path.parent / "index.json"  # the package's, or the optional medvae-ladder's
        index = json.loads(index_path.read_text())
        model = load_model(path)
        entry = index["medvae"]["qualities"][str(quality)]
        old = entry.get("format1_fingerprint", entry["fingerprint"])
        if fingerprint(model) != old:
            raise SystemExit(f"{path.name}: weights differ from the index ({fingerprint(model)} != {old})")
        with torch.no_grad():
            model.exact_plan = calibrate(model, [s.pixels for s in slices])
        atomic_torch_save(model_record(model, half=True), path)
        shipped = load_model(path)  # as users load it: float16 weights cast back to float32
        assert fingerprint(shipped) == old, "re-saving changed the float weights"
        entry["format1_fingerprint"] = old
        entry["fingerprint"] = exact_fingerprint(shipped, shipped.exact_plan)
        entry["exact"] = {
            "version": EXACT_VERSION,
            "command": COMMAND + (f" --max-slices {args.max_slices}" if args.max_slices != 4 else ""),
            "calibration": f"{len(slices)} corpus training slices (at most {args.max_slices} per volume) and medvae.exact.synthetic_images()",
        }
        print(f"q{quality}: {path.name} plan of {len(shipped.exact_plan)} entries, fingerprint {entry['fingerprint']} (format 1: {old})")
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    zoo.index.cache_clear()


if __name__ == "__main__":
    main()
