"""Shipped weights: ``medvae/weights/index.json`` names each (model, quality) file.

The index maps a model family to its qualities::

    {"medvae": {"default_quality": 3,
                "qualities": {"1": {"file": "medvae-q1.pt", "fingerprint": "...", ...}}}}

so ``medvae.load("medvae", quality=2)`` finds a file, and a bitstream whose
header names a fingerprint finds its weights without being told. A variable-rate model
has one file for every quality::

    {"medvae-vr": {"default_quality": 5, "variable_rate": true,
                   "weights": {"file": "medvae-vr.pt", "fingerprint": "...", ...}}}

Optional packages add weights folders of their own (:data:`OPTIONAL_WEIGHTS`), merged into
one index: ``medvae-ladder`` holds the old ``medvae`` ladder's qualities other than its
default, and the weights a variable-rate model's were before (``"previous"``), which only
files written with them need. The main index names their fingerprints (``"optional"``), so
such a file, or ``quality=3``, says which package to install; a family that only the optional
package ships (``medvae-vr``) keeps such an entry without weights.

A variable-rate family may ship alternative weights (``"alternatives"``: records like
``"weights"``) trained for the same qualities on other crops or data: its encoder codes an image
with each and keeps the file of lowest rate–distortion cost (:class:`medvae.codec.Codec`), and
files name the weights that wrote them.

(Release tooling that writes the weights and the index is ``tools/export_weights.py``,
outside the package.)
"""

from __future__ import annotations

import importlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvae.errors import BitstreamError, MedVAEError

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: Importable packages whose ``WEIGHTS_DIR`` holds more shipped weights, and what pip calls them.
OPTIONAL_WEIGHTS = {"medvae_ladder": "medvae-ladder"}


def weights_dirs() -> list[Path]:
    """The package's weights folder and those of the optional weights packages installed."""
    folders = [WEIGHTS_DIR]
    for module in OPTIONAL_WEIGHTS:
        try:
            folders.append(Path(importlib.import_module(module).WEIGHTS_DIR))
        except ImportError:
            pass
    return folders


@lru_cache(maxsize=1)
def index() -> dict[str, Any]:
    """The weights index of every installed weights folder, merged (empty when none is
    installed). Each weights and residual record gets ``"path"``: where its file lies."""
    merged: dict[str, Any] = {}
    for folder in weights_dirs():
        path = folder / "index.json"
        for name, entry in (json.loads(path.read_text()) if path.is_file() else {}).items():
            for record in _files(entry):
                for item in [record, *_residual_records(record)]:
                    item["path"] = str(folder / item["file"])
            if name not in merged:
                merged[name] = entry
                continue
            # A family's weights, more qualities of a ladder, or earlier weights: what the first folder ships stays its own.
            mine = merged[name]
            for key, value in entry.items():
                if key not in mine:
                    mine[key] = value
                elif key == "qualities":
                    for quality, record in value.items():
                        mine[key].setdefault(quality, record)
                elif key == "previous":
                    mine[key] = [*mine[key], *value]
    return merged


def _files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The weights records of an index entry: one per quality, or a variable-rate model's one and
    its alternatives, and the weights it replaced (``"previous"``), which only files written with them need."""
    current = list(entry.get("qualities", {}).values()) + ([entry["weights"]] if "weights" in entry else [])
    return current + list(entry.get("alternatives", [])) + list(entry.get("previous", []))


def is_variable_rate(model: str) -> bool:
    """Whether the shipped ``model`` codes any quality in a range from one weights file."""
    return bool(index().get(model, {}).get("variable_rate"))


#: The shipped model that codes by default: ``medvae-ctx``, one file for every quality. On the
#: corpus test split it needs fewer bits than the ``medvae`` ladder (per-image BD-rate over
#: 0.05–1 bpp, its encoder choosing between its two weights: −12.8 % on CT, −20.6 % on MR,
#: −21.5 % on the radiographs; ``benchmarks/results/context.md``). The ladder stays shipped: its files name its weights, and
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
        if "weights" not in entry:
            raise MedVAEError(f"{model!r} comes with {_install_hint(entry['optional'])}")
        levels = len(entry["weights"]["model_config"]["lmbdas"])
        from medvae.models.gain import LOWEST_QUALITY  # here: reading the index (medvae info) needs no CompressAI

        if quality is not None and not LOWEST_QUALITY <= float(quality) <= levels:
            raise MedVAEError(f"{model!r} has no quality {quality:g}: it codes any quality from {LOWEST_QUALITY} to {levels}")
        return Path(entry["weights"]["path"])
    if quality is not None and float(quality) != int(quality):
        raise MedVAEError(
            f"{model!r} has the qualities {qualities(model)}; a fractional quality needs a variable-rate model (medvae-vr)"
        )
    quality = entry["default_quality"] if quality is None else int(quality)
    try:
        return Path(entry["qualities"][str(quality)]["path"])
    except KeyError:
        optional = entry.get("optional", {})
        if quality in optional.get("qualities", []):
            raise MedVAEError(f"{model!r} quality {quality} comes with {_install_hint(optional)}") from None
        raise MedVAEError(
            f"{model!r} has no quality {quality}; shipped qualities: {qualities(model)}"
        ) from None


def _install_hint(optional: dict[str, Any]) -> str:
    package = optional["package"]
    return (
        f"the optional package {package}, which is not installed: pip install {package} "
        f"(from a MedVAE checkout: pip install -e packages/{package})"
    )


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


def _record_of(path: str | Path) -> dict[str, Any] | None:
    """The index record of the shipped weights file ``path`` (None if it is not one)."""
    path = Path(path).resolve()
    for entry in index().values():
        for record in _files(entry):
            if Path(record["path"]).resolve() == path:
                return record
    return None


def shipped_fingerprint(path: str | Path) -> str | None:
    """The fingerprint the index records for the shipped weights file ``path`` (None if it is not one)."""
    record = _record_of(path)
    return None if record is None else record["fingerprint"]


def shipped_lmbda(path: str | Path) -> float | None:
    """λ recorded in the index for the shipped weights file ``path`` (None if it is not one)."""
    record = _record_of(path)
    return None if record is None or record.get("lmbda") is None else float(record["lmbda"])


def alternative_paths(weights: str | Path) -> list[Path]:
    """The alternative weights shipped with the variable-rate weights file ``weights`` (its
    family's ``"alternatives"``; empty for any other file)."""
    path = Path(weights).resolve()
    for entry in index().values():
        if "weights" in entry and Path(entry["weights"]["path"]).resolve() == path:
            return [Path(record["path"]) for record in entry.get("alternatives", [])]
    return []


def residual_path(weights: str | Path, series: bool = False) -> Path | None:
    """The residual model shipped with the weights file ``weights`` (lossless and near-lossless
    coding build on that base), or with ``series`` its series residual model (a slice coded
    given the one before it); None when it has none."""
    record = _record_of(weights)
    key = "series_residual" if series else "residual"
    return None if record is None or key not in record else Path(record[key]["path"])


def _residual_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The residual models a weights record names: its residual and series residual models,
    and those kept (``previous_residuals``) so that files written with them still decode."""
    return [r for r in (record.get("residual"), record.get("series_residual"), *record.get("previous_residuals", [])) if r]


def residual_for_fingerprint(fingerprint: str) -> Path | None:
    """The shipped residual model with ``fingerprint`` (:func:`_residual_records`); None if none."""
    for entry in index().values():
        for quality in _files(entry):
            for record in _residual_records(quality):
                if record["fingerprint"] == fingerprint:
                    return Path(record["path"])
    return None


def optional_package(model: str, fingerprint: str) -> str | None:
    """The optional package that holds ``model``'s weights ``fingerprint``, if one does (installed or not)."""
    optional = index().get(model, {}).get("optional", {})
    return optional["package"] if fingerprint in optional.get("fingerprints", []) else None


def path_for_fingerprint(model: str, fingerprint: str) -> Path:
    """The shipped weights a bitstream was written with, found by its header's fingerprint
    (of format 2, or of format 1 for files written by earlier releases)."""
    family = index().get(model, {})
    for entry in _files(family):
        if fingerprint in (entry["fingerprint"], entry.get("format1_fingerprint")):
            return Path(entry["path"])
    optional = family.get("optional", {})
    if optional_package(model, fingerprint):
        raise BitstreamError(f"bitstream was written with {model!r} weights {fingerprint}, which come with {_install_hint(optional)}")
    raise BitstreamError(
        f"bitstream needs {model!r} weights {fingerprint}, which are not installed; "
        "pass the checkpoint it was written with (model=...)"
    )
