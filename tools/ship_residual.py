#!/usr/bin/env python
"""Ship a trained residual model with a shipped base: ``medvae/weights/<base file stem>-residual-<fingerprint[:8]>.pt``
(a series model, which reads the previous slice or two: ``-series-``).

The base's index record gets the new model as its ``residual`` (what lossless and near-lossless
coding now use; a series model as its ``series_residual``); the model it replaces moves to ``previous_residuals``, so files written with it
still decode (:func:`medvae.zoo.residual_for_fingerprint`). The residual model must have been
trained on this base (its recorded base fingerprint is checked). Release tooling, outside the package.

    python tools/ship_residual.py runs/residual/r2.pt --model medvae --quality 5 --note budget="..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medvae import zoo
from medvae.errors import MedVAEError
from medvae.io.files import publish
from medvae.residual.weights import load_residual

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's tools package
from tools.export_weights import write_index  # noqa: E402


def ship_residual(path: str | Path, model: str, quality: int | None = None, notes: dict[str, Any] | None = None) -> Path:
    """Copy the residual model at ``path`` beside the shipped ``model`` weights (at ``quality``)
    and make it their residual model in the index; returns the shipped file."""
    residual = load_residual(path)
    base = zoo.shipped_path(model, quality)
    index_path = base.parent / "index.json"
    index = json.loads(index_path.read_text())
    record = next(r for r in zoo._files(index[model]) if r["file"] == base.name)
    if residual.info.get("base_fingerprint") != record["fingerprint"]:
        raise MedVAEError(
            f"{path}: trained on base {residual.info.get('base_fingerprint')}, not on {base.name} ({record['fingerprint']})"
        )
    key = "series_residual" if residual.model.previous else "residual"
    target = base.parent / f"{base.stem}-{'series' if residual.model.previous else 'residual'}-{residual.fingerprint[:8]}.pt"
    if residual.fingerprint in [r["fingerprint"] for r in zoo._residual_records(record)]:
        raise MedVAEError(f"{target.name}: this residual model is shipped already")
    publish(target, Path(path).read_bytes(), overwrite=True)  # a copy left by a run that failed before the index is replaced
    info = residual.info
    entry = {
        "file": target.name, "fingerprint": residual.fingerprint, "steps": info.get("steps"),
        "command": info.get("command"), **(notes or {}),
    }
    if key in record:
        record.setdefault("previous_residuals", []).append(record[key])
    record[key] = entry
    write_index(index_path, index)
    zoo.index.cache_clear()
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("residual")
    parser.add_argument("--model", default="medvae")
    parser.add_argument("--quality", type=int)
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    target = ship_residual(args.residual, args.model, args.quality, dict(item.split("=", 1) for item in args.note))
    print(f"wrote {target} ({target.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
