"""Shipped weights: ``medvae/weights/index.json`` names each (model, quality) file.

The index maps a model family to its qualities::

    {"medvae": {"default_quality": 3,
                "qualities": {"1": {"file": "medvae-q1.pt", "fingerprint": "...", ...}}}}

so ``medvae.load("medvae", quality=2)`` finds a file, and a bitstream whose
header names a fingerprint finds its weights without being told. A variable-rate model
has one file for every quality::

    {"medvae-vr": {"default_quality": 5, "variable_rate": true,
                   "weights": {"file": "medvae-vr.pt", "fingerprint": "...", ...}}}

(Release tooling that writes the weights and the index is ``tools/export_weights.py``,
outside the package.)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvae.errors import BitstreamError, MedVAEError

WEIGHTS_DIR = Path(__file__).with_name("weights")


@lru_cache(maxsize=1)
def index() -> dict[str, Any]:
    """The parsed weights index (empty when no weights are installed)."""
    path = WEIGHTS_DIR / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The weights records of an index entry: one per quality, or a variable-rate model's one."""
    return list(entry.get("qualities", {}).values()) + ([entry["weights"]] if "weights" in entry else [])


def is_variable_rate(model: str) -> bool:
    """Whether the shipped ``model`` codes any quality in a range from one weights file."""
    return bool(index().get(model, {}).get("variable_rate"))


#: The shipped model that codes by default: ``medvae-ctx``, one file for every quality. On the
#: corpus test split it needs fewer bits than the ``medvae`` ladder (per-image BD-rate over
#: 0.05–1 bpp: −5.1 % on CT, −13.7 % on MR, −23.9 % on the radiographs;
#: ``benchmarks/results/context.md``). The ladder stays shipped: its files name its weights, and
#: lossless and near-lossless coding build on its default quality (:func:`default_model`).
DEFAULT_MODEL = "medvae-ctx"


def default_model(max_error: int | None = None) -> str:
    """The shipped model that codes by default (:data:`DEFAULT_MODEL`, or the ``medvae`` ladder
    where it is not installed); lossless and near-lossless coding (``max_error``) need
    ``medvae``, whose default quality comes with the residual model."""
    if max_error is not None or DEFAULT_MODEL not in index():  # a weights folder without it: the ladder
        return "medvae"
    return DEFAULT_MODEL


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
    if entry.get("variable_rate"):  # one file; the codec takes the quality (medvae.load)
        levels = len(entry["weights"]["model_config"]["lmbdas"])
        if quality is not None and not 1 <= float(quality) <= levels:
            raise MedVAEError(f"{model!r} has no quality {quality:g}: it codes any quality from 1 to {levels}")
        return WEIGHTS_DIR / entry["weights"]["file"]
    if quality is not None and float(quality) != int(quality):
        raise MedVAEError(
            f"{model!r} has the qualities {qualities(model)}; a fractional quality needs a variable-rate model (medvae-vr)"
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
        for quality in _files(entry):
            if quality["file"] == path.name and quality.get("lmbda") is not None:
                return float(quality["lmbda"])
    return None


def residual_path(weights: str | Path) -> Path | None:
    """The residual model shipped with the weights file ``weights`` (lossless and near-lossless
    coding build on that base), or None when it has none."""
    weights = Path(weights)
    if weights.resolve().parent != WEIGHTS_DIR.resolve():
        return None
    for entry in index().values():
        for quality in _files(entry):
            if quality["file"] == weights.name and "residual" in quality:
                return WEIGHTS_DIR / quality["residual"]["file"]
    return None


def residual_for_fingerprint(fingerprint: str) -> Path | None:
    """The shipped residual model with ``fingerprint``: the one a base codes with now, or one
    kept (``previous_residuals``) so that files written with it still decode; None if none."""
    for entry in index().values():
        for quality in _files(entry):
            for record in [quality.get("residual"), *quality.get("previous_residuals", [])]:
                if record and record["fingerprint"] == fingerprint:
                    return WEIGHTS_DIR / record["file"]
    return None


def path_for_fingerprint(model: str, fingerprint: str) -> Path:
    """The shipped weights a bitstream was written with, found by its header's fingerprint
    (of format 2, or of format 1 for files written by earlier releases)."""
    for entry in _files(index().get(model, {})):
        if fingerprint in (entry["fingerprint"], entry.get("format1_fingerprint")):
            return WEIGHTS_DIR / entry["file"]
    raise BitstreamError(
        f"bitstream needs {model!r} weights {fingerprint}, which are not installed; "
        "pass the checkpoint it was written with (model=...)"
    )
