"""Shipped weights: ``medvae/weights/index.json`` names each (model, quality) file.

The index maps a model family to its qualities::

    {"medvae": {"default_quality": 3,
                "qualities": {"1": {"file": "medvae-q1.pt", "fingerprint": "...", ...}}}}

so ``medvae.load("medvae", quality=2)`` finds a file, and a bitstream whose
header names a fingerprint finds its weights without being told.
"""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvae.errors import BitstreamError, MedVAEError
from medvae.io.files import publish

WEIGHTS_DIR = Path(__file__).with_name("weights")


@lru_cache(maxsize=1)
def index() -> dict[str, Any]:
    """The parsed weights index (empty when no weights are installed)."""
    path = WEIGHTS_DIR / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def qualities(model: str) -> list[int]:
    """Shipped quality levels of ``model``, lowest rate first."""
    return sorted(int(q) for q in index().get(model, {}).get("qualities", {}))


#: What an unknown model name's error suggests; the command line passes its own (``--model``).
HINT = "pass a checkpoint path instead"


def shipped_path(model: str, quality: int | None = None, hint: str = HINT) -> Path:
    """Weights file of a shipped model at ``quality`` (its default quality when None);
    ``hint`` ends the error for an unknown model."""
    entry = index().get(model)
    if not entry:
        shipped = ", ".join(sorted(index())) or "none"
        raise MedVAEError(
            f"no shipped weights for {model!r} (shipped: {shipped}); {hint}"
        )
    quality = entry["default_quality"] if quality is None else int(quality)
    try:
        return WEIGHTS_DIR / entry["qualities"][str(quality)]["file"]
    except KeyError:
        raise MedVAEError(
            f"{model!r} has no quality {quality}; shipped qualities: {qualities(model)}"
        ) from None


def resolve(source: str | os.PathLike, quality: int | None = None, hint: str = HINT) -> Path:
    """The weights file ``medvae.load(source, quality)`` reads: ``source`` itself when it is a
    file, else the shipped weights of the model named ``source`` (a bare name, no suffix).
    Cheap (no torch), so the command line checks its arguments before loading anything."""
    path = Path(source)
    if path.is_file():
        return path
    if isinstance(source, str) and os.sep not in source and not path.suffix:
        return shipped_path(source, quality, hint)
    raise FileNotFoundError(f"no such checkpoint: {source}")


def shipped_lmbda(path: str | Path) -> float | None:
    """λ recorded in the index for the shipped weights file ``path`` (None if it is not one)."""
    path = Path(path)
    if path.resolve().parent != WEIGHTS_DIR.resolve():
        return None
    for entry in index().values():
        for quality in entry.get("qualities", {}).values():
            if quality["file"] == path.name and quality.get("lmbda") is not None:
                return float(quality["lmbda"])
    return None


def path_for_fingerprint(model: str, fingerprint: str) -> Path:
    """The shipped weights a bitstream was written with, found by its header's fingerprint
    (of format 2, or of format 1 for files written by earlier releases)."""
    for entry in index().get(model, {}).get("qualities", {}).values():
        if fingerprint in (entry["fingerprint"], entry.get("format1_fingerprint")):
            return WEIGHTS_DIR / entry["file"]
    raise BitstreamError(
        f"bitstream needs {model!r} weights {fingerprint}, which are not installed; "
        "pass the checkpoint it was written with (model=...)"
    )


def export(checkpoint: str | Path, quality: int, *, default_quality: int | None = None, notes: dict[str, Any] | None = None) -> Path:
    """Ship a training checkpoint as ``medvae/weights/<model>-q<quality>.pt`` (float16 weights).

    The weights are stored in float16 and cast back to float32 on loading, with the
    checkpoint's exact plan (calibrated now if it has none); the recorded fingerprint
    is that of the loaded model and its plan, which is what encoder and decoder both
    use, so coding stays bit-exact. ``notes`` (training config, command, wall time,
    validation metrics) go into the index for the record.
    """
    import torch

    from medvae.checkpoint import exact_fingerprint, load_model, model_record, trained_lmbda
    from medvae.exact import calibrate

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = load_model(checkpoint)
    if model.exact_plan is None:
        model.exact_plan = calibrate(model)
    name = model.model_name
    target = WEIGHTS_DIR / f"{name}-q{int(quality)}.pt"
    WEIGHTS_DIR.mkdir(exist_ok=True)
    record = model_record(model, half=True)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    publish(target, buffer.getvalue(), overwrite=True)
    shipped = load_model(target)  # float16 → float32, exactly as users will load it
    shipped.update(force=False)
    entry = {
        "file": target.name,
        "fingerprint": exact_fingerprint(shipped, shipped.exact_plan),
        "model_config": record["model_config"],
        "lmbda": trained_lmbda(state),  # None unless trained with MSE: what refinement aims at
        "step": state.get("step"),
        **(notes or {}),
    }
    path = WEIGHTS_DIR / "index.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    family = data.setdefault(name, {"default_quality": int(quality), "qualities": {}})
    family["qualities"][str(int(quality))] = entry
    if default_quality is not None:
        family["default_quality"] = int(default_quality)
    publish(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), overwrite=True)
    index.cache_clear()
    return target


def main(argv: list[str] | None = None) -> None:
    """``python -m medvae.zoo CHECKPOINT --quality Q [--default] [--note key=value ...]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Ship a checkpoint as packaged weights.")
    parser.add_argument("checkpoint")
    parser.add_argument("--quality", type=int, required=True)
    parser.add_argument("--default", action="store_true", help="make this the default quality")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    notes = dict(item.split("=", 1) for item in args.note)
    target = export(args.checkpoint, args.quality, default_quality=args.quality if args.default else None, notes=notes)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
