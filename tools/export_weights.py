"""Ship a training checkpoint as packaged weights: a release tool, not part of the package.

    python tools/export_weights.py CHECKPOINT --quality Q [--default] [--note key=value ...]

writes ``medvae/weights/<model>-q<Q>.pt`` in this repository and its entry in
``medvae/weights/index.json`` (:mod:`medvae.zoo` reads them at run time). A
variable-rate checkpoint (``medvae-vr``) is one file for every quality,
``medvae/weights/<model>.pt``; ``--quality`` is then its default quality.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from medvae import zoo
from medvae.checkpoint import exact_fingerprint, load_model, model_record, trained_lmbda
from medvae.exact import calibrate
from medvae.io.files import publish

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = REPO / "medvae" / "weights"
#: The optional weights package that keeps the weights a new export replaces (``zoo.OPTIONAL_WEIGHTS``).
OPTIONAL_PACKAGE = "medvae-ladder"
OPTIONAL_DIR = REPO / "packages" / "medvae-ladder" / "medvae_ladder" / "weights"


def export(
    checkpoint: str | Path, quality: int, *, default_quality: int | None = None, notes: dict[str, Any] | None = None,
    weights_dir: Path = WEIGHTS_DIR, optional_dir: Path = OPTIONAL_DIR, alternative: bool = False,
) -> Path:
    """Ship a training checkpoint as ``<weights_dir>/<model>-q<quality>.pt`` (float16 weights) and
    record it in ``<weights_dir>/index.json`` (default: this repository's ``medvae/weights``).

    The weights are stored in float16 and cast back to float32 on loading, with the
    checkpoint's exact plan (calibrated now if it has none); the recorded fingerprint
    is that of the loaded model and its plan, which is what encoder and decoder both
    use, so coding stays bit-exact. ``notes`` (training config, command, wall time,
    validation metrics) go into the index for the record. New weights of a variable-rate model
    replace the old in place; the old ones move to the optional package (``optional_dir``) as
    ``<model>-<fingerprint>.pt`` (:func:`retire`), so files written with them still decode.
    With ``alternative``, variable-rate weights join the family's current ones instead
    (``<model>-<fingerprint>.pt``, an ``"alternatives"`` record: the encoder chooses per image).
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = load_model(checkpoint)
    if model.exact_plan is None:
        model.exact_plan = calibrate(model)
    name = model.model_name
    variable_rate = hasattr(model, "gain")
    target = weights_dir / (f"{name}.pt" if variable_rate else f"{name}-q{int(quality)}.pt")
    weights_dir.mkdir(exist_ok=True)
    record = model_record(model, half=True)
    buffer = io.BytesIO()
    torch.save(record, buffer)
    with tempfile.TemporaryDirectory() as folder:  # the fingerprint first: the old weights may have to be kept
        (Path(folder) / target.name).write_bytes(buffer.getvalue())
        shipped = load_model(Path(folder) / target.name)  # float16 → float32, exactly as users will load it
    shipped.update(force=False)
    fingerprint = exact_fingerprint(shipped, shipped.exact_plan)
    if alternative:
        if not variable_rate:
            raise ValueError("alternative weights are for variable-rate families")
        target = weights_dir / f"{name}-{fingerprint[:8]}.pt"
    entry = {
        "file": target.name,
        "fingerprint": fingerprint,
        "model_config": record["model_config"],
        "lmbda": trained_lmbda(state),  # None unless trained with MSE: what refinement aims at
        "step": state.get("step"),
        **(notes or {}),
    }
    path = weights_dir / "index.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if alternative:
        if "weights" not in data.get(name, {}):
            raise ValueError(f"ship {name}'s weights before an alternative to them")
        family = data[name]  # alternatives join a shipped family
        kept = [r for r in family.get("alternatives", []) if r["fingerprint"] != fingerprint]
        family["alternatives"] = [*kept, entry]
    elif variable_rate:
        before = data.get(name, {})
        optional = before.get("optional")
        if target.is_file() and "weights" in before and before["weights"]["fingerprint"] != entry["fingerprint"]:
            optional = retire(name, before["weights"], target.read_bytes(), optional_dir)  # before it is overwritten
        data[name] = {"default_quality": quality, "variable_rate": True, "weights": entry, **({"optional": optional} if optional else {})}
    else:
        family = data.setdefault(name, {"default_quality": int(quality), "qualities": {}})
        before = family["qualities"].get(str(int(quality)), {})
        kept = {key: before[key] for key in ("residual", "series_residual", "previous_residuals") if key in before}
        if kept and before["fingerprint"] != entry["fingerprint"]:
            raise ValueError(
                f"{name} quality {quality} is the base of shipped residual models, whose files need these weights; "
                "ship new weights under another quality"
            )
        family["qualities"][str(int(quality))] = {**entry, **kept}
        if default_quality is not None:
            family["default_quality"] = int(default_quality)
    publish(target, buffer.getvalue(), overwrite=True)
    write_index(path, data)
    zoo.index.cache_clear()
    return target


def write_index(path: Path, data: dict[str, Any]) -> None:
    """Write a weights index (sorted keys, as every release tool writes it), atomically."""
    publish(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), overwrite=True)


def retire(name: str, record: dict[str, Any], weights: bytes, optional_dir: Path) -> dict[str, Any]:
    """Keep replaced weights of ``name`` (its index ``record`` and file bytes) in the optional
    package: ``<name>-<fingerprint>.pt`` and a ``"previous"`` record in its index. Returns the
    main index's ``"optional"`` entry for ``name``, which names the package for those files."""
    fingerprint = record["fingerprint"]
    target = optional_dir / f"{name}-{fingerprint[:8]}.pt"
    optional_dir.mkdir(parents=True, exist_ok=True)
    publish(target, weights, overwrite=True)
    path = optional_dir / "index.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    kept = [r for r in data.setdefault(name, {}).setdefault("previous", []) if r["fingerprint"] != fingerprint]
    data[name]["previous"] = [*kept, {**{k: v for k, v in record.items() if k != "path"}, "file": target.name}]
    write_index(path, data)
    return {"package": OPTIONAL_PACKAGE, "fingerprints": sorted(r["fingerprint"] for r in data[name]["previous"])}


def main(argv: list[str] | None = None) -> None:
    """``python tools/export_weights.py CHECKPOINT --quality Q [--default] [--note key=value ...]``."""
    parser = argparse.ArgumentParser(description="Ship a checkpoint as packaged weights.")
    parser.add_argument("checkpoint")
    parser.add_argument("--quality", type=int, required=True)
    parser.add_argument("--default", action="store_true", help="make this the default quality")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--alternative", action="store_true", help="variable-rate weights that join the current ones")
    args = parser.parse_args(argv)
    notes = dict(item.split("=", 1) for item in args.note)
    target = export(args.checkpoint, args.quality, default_quality=args.quality if args.default else None, notes=notes,
                    alternative=args.alternative)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
