"""Saving and loading model weights, and the fingerprint that ties a bitstream to them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compressai.models import CompressionModel

from medvae.errors import MedVAEError
from medvae.exact import EXACT_VERSION, calibrate
from medvae.io.files import atomic_path
from medvae.models import create

CHECKPOINT_FORMAT = "medvae-checkpoint-v1"


def _state_digest(model: CompressionModel) -> "hashlib._Hash":
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest


def fingerprint(model: CompressionModel) -> str:
    """16 hex digits of a SHA-256 over every tensor of the state dict (weights and CDF tables).

    The weights a format-1 file names (the float decoder of earlier releases).
    """
    return _state_digest(model).hexdigest()[:16]


def exact_fingerprint(model: CompressionModel, plan: dict[str, int]) -> str:
    """The weights a format-2 file names: the state dict, the exact plan and the exact rules' version.

    Two codecs produce and decode the same bitstreams exactly when this matches.
    """
    digest = _state_digest(model)
    digest.update(json.dumps({"exact_version": EXACT_VERSION, "plan": plan}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def model_record(model: CompressionModel, half: bool = False) -> dict[str, Any]:
    """What a checkpoint needs to rebuild ``model``: family name, constructor args, weights.

    With ``half``, learned parameters are stored as float16; loading casts them
    back to float32. Buffers (CDF tables, scale table, likelihood bounds) stay
    exact: a bound of 1e-9 would round to zero in float16.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        learned = {name for name, _ in model.named_parameters()}
        state = {k: v.half() if k in learned and v.is_floating_point() else v for k, v in state.items()}
    record = {"format": CHECKPOINT_FORMAT, "model": model.model_name, "model_config": dict(model.config), "state_dict": state}
    if getattr(model, "exact_plan", None) is not None:
        record["exact_plan"] = dict(model.exact_plan)
    return record


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def prepare_for_coding(model: CompressionModel, calibration: Iterable[np.ndarray] | None = None) -> None:
    """Compute what coding needs beside the weights: the entropy coder's CDF tables and the
    exact plan (:func:`medvae.exact.calibrate`, on ``calibration`` images and synthetic ones).

    Both are float computations, done once here and stored with the weights, so that no
    decoder ever recomputes them.
    """
    model.update(force=True)
    model.exact_plan = calibrate(model, calibration)


def save_model(
    model: CompressionModel,
    path: str | os.PathLike,
    half: bool = False,
    calibration: Iterable[np.ndarray] | None = None,
    **extra: Any,
) -> None:
    """Write a coding checkpoint that :func:`medvae.load` reads, prepared for coding first
    (:func:`prepare_for_coding`, calibrated on ``calibration`` images)."""
    prepare_for_coding(model, calibration)
    atomic_torch_save({**model_record(model, half=half), **extra}, path)


def load_model(path: str | os.PathLike) -> CompressionModel:
    """Rebuild the model stored in a checkpoint written by :func:`save_model` or ``train.py``."""
    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise MedVAEError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise MedVAEError(f"{path}: not a MedVAE checkpoint")
    state = {k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    try:
        model = create(record["model"], **record["model_config"])
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedVAEError(
            f"{path}: checkpoint does not fit this MedVAE's {record.get('model')!r} model ({first})"
        ) from None
    model.trained_lmbda = trained_lmbda(record)
    model.exact_plan = record.get("exact_plan")
    return model.eval()


def trained_lmbda(record: dict[str, Any]) -> float | None:
    """λ of the ``R + λ·255²·MSE`` loss a checkpoint's weights were trained with, if it says.

    ``train.py`` checkpoints carry their config; weights trained with another
    distortion (MS-SSIM) give None, since their λ means something else.
    """
    loss = (record.get("config") or {}).get("loss") or {}
    if loss.get("distortion", "mse") == "mse" and "lmbda" in loss:
        return float(loss["lmbda"])
    return None
