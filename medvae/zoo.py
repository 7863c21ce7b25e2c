"""Shipped weights: ``medvae/weights/index.json`` names each (model, quality) file.

The index maps a model family to its qualities::

    {"medvae": {"default_quality": 3,
                "qualities": {"1": {"file": "medvae-q1.pt", "fingerprint": "...", ...}}}}

so ``medvae.load("medvae", quality=2)`` finds a file, and a bitstream whose
header names a fingerprint finds its weights without being told.
"""

from __future__ import annotations

import json
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


def qualities(model: str) -> list[int]:
    """Shipped quality levels of ``model``, lowest rate first."""
    return sorted(int(q) for q in index().get(model, {}).get("qualities", {}))


def shipped_path(model: str, quality: int | None = None) -> Path:
    """Weights file of a shipped model at ``quality`` (its default quality when None)."""
    entry = index().get(model)
    if not entry:
        shipped = ", ".join(sorted(index())) or "none"
        raise MedVAEError(
            f"no shipped weights for {model!r} (shipped: {shipped}); pass a checkpoint path instead"
        )
    quality = entry["default_quality"] if quality is None else int(quality)
    try:
        return WEIGHTS_DIR / entry["qualities"][str(quality)]["file"]
    except KeyError:
        raise MedVAEError(
            f"{model!r} has no quality {quality}; shipped qualities: {qualities(model)}"
        ) from None


def path_for_fingerprint(model: str, fingerprint: str) -> Path:
    """The shipped weights a bitstream was written with, found by its header's fingerprint."""
    for entry in index().get(model, {}).get("qualities", {}).values():
        if entry["fingerprint"] == fingerprint:
            return WEIGHTS_DIR / entry["file"]
    raise BitstreamError(
        f"bitstream needs {model!r} weights {fingerprint}, which are not installed; "
        "pass the checkpoint it was written with (model=...)"
    )
