"""Training configuration: YAML files over defaults, with ``key.sub=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from medvae.errors import MedVAEError

DEFAULTS: dict[str, Any] = {
    "model": {"name": "medvae", "N": 128, "M": 192, "in_channels": 1, "lmbdas": None},  # lmbdas: levels of a variable-rate family (None: its own)
    "loss": {"lmbda": 0.0130, "distortion": "mse"},
    "data": {
        "manifest": None,  # a MANIFEST.csv (path, modality, patient, split, ...)
        "folder": None,  # or a plain folder, split by patient
        "modalities": None,  # e.g. [CT, MR]; None = all
        "crop_size": 256,
        "batch_size": 8,
        "workers": 2,
        "small": "pad",  # slices smaller than the crop: pad or skip
        "epoch_size": 2048,  # samples drawn per (virtual) epoch
        "balance": "slices",  # slices: every slice equally often; patients: every patient; sqrt-patients: ∝ sqrt(slices)
        "modality_weights": None,  # e.g. {CR: 5, DX: 5}: a slice's draw weight times its modality's (default 1); override whole: data.modality_weights='{CR: 5}'
        "val_split": "val",
        "val_fraction": 0.1,  # folder datasets: share of patients held out for validation
        "test_fraction": 0.0,  # folder datasets: share of patients held out for testing
        "max_val_slices": 8,
    },
    "optim": {
        "lr": 1.0e-4,
        "aux_lr": 1.0e-3,
        "clip_grad": 1.0,
        "scheduler": "multistep",  # constant | multistep | cosine
        "milestones": [0.8, 0.95],  # fractions of the iterations (multistep)
        "gamma": 0.1,
    },
    "train": {
        "iterations": 100000,
        "minutes": None,  # wall-time budget: the iterations are cut to what fits (leased machines)
        "val_interval": 1000,
        "log_interval": 50,
        "checkpoint_interval": 1000,
        "seed": 0,
        "out_dir": "runs/medvae",
        "init_from": None,  # checkpoint whose parameters start this run (another λ, or a wider M)
        "image_interval": 5000,
    },
}


def _merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    for key, value in update.items():
        if key not in base:
            raise MedVAEError(f"unknown config key {where}{key!r}; known: {', '.join(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise MedVAEError(f"config key {where}{key} must be a mapping")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = _as_number(value, base[key], f"{where}{key}")
    return base


def _as_number(value: Any, default: Any, name: str) -> Any:
    """Numbers stay numbers: YAML 1.1 reads ``1e-4`` as a string, so convert it back."""
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        raise MedVAEError(f"config key {name} must be a number, not {value!r}") from None


def apply_override(config: dict[str, Any], override: str) -> None:
    """Apply one ``a.b=value`` override (value parsed as YAML: numbers, lists, null...)."""
    if "=" not in override:
        raise MedVAEError(f"override {override!r} is not key=value")
    dotted, raw = override.split("=", 1)
    *parents, leaf = dotted.split(".")
    nested: dict[str, Any] = {leaf: yaml.safe_load(raw)}
    for key in reversed(parents):
        nested = {key: nested}
    _merge(config, nested)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Defaults, then the YAML file (if any), then the overrides, in that order."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        _merge(config, loaded)
    for override in overrides:
        apply_override(config, override)
    return config
