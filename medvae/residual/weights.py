"""Saving, loading and fingerprinting residual models (with the exact plan their coder uses)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medvae.errors import MedVAEError
from medvae.exact import EXACT_VERSION
from medvae.exact.calibrate import Plan, layer_peaks, plan_from_peaks
from medvae.io.files import atomic_path
from medvae.residual.coder import ResidualCoder
from medvae.residual.model import ResidualModel, pass_laws, previous_tensor, slice_tensors
from medvae.residual.tables import tables_digest

FORMAT = "medvae-residual-v1"


#: Error bounds whose decoded residuals calibrate a model that reads the bounds (lossless alone, else).
CALIBRATION_BOUNDS = (0, 1, 4, 16, 64)


def calibrate_residual(model: ResidualModel, pairs: Sequence[tuple]) -> Plan:
    """Fractional bits of each layer of the residual network, from (image, base, range) examples
    (and the previous slice, for a series model: :class:`medvae.residual.training.Pair` fits)
    run through the four passes with the residuals decoded losslessly as context, and for a
    model that reads the bounds, near-losslessly too (:data:`CALIBRATION_BOUNDS`)."""
    def run() -> None:
        for image, base, value_range, *previous in pairs:
            x, b, lo, hi = slice_tensors(image, base, value_range)
            before = previous_tensor(previous[0], x.shape[-2:]) if model.previous else None
            for tau in CALIBRATION_BOUNDS if model.bounds else (0,):
                with torch.no_grad():
                    for _ in pass_laws(model, x, b, lo, hi, before, tau):
                        pass

    peaks = layer_peaks(model, run)
    return plan_from_peaks({k: v for k, v in peaks.items() if not k.endswith(":in")}, input_peak=16.0)


def fingerprint(model: ResidualModel, plan: Plan) -> str:
    """16 hex digits over the weights, the plan, the exact rules' version and the CDF tables."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps({"plan": plan, "exact_version": EXACT_VERSION, "tables": tables_digest()}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


class Residual:
    """A trained residual model ready to code: the float model, its plan, coder and fingerprint."""

    def __init__(self, model: ResidualModel, plan: Plan, info: dict[str, Any] | None = None):
        self.model, self.plan, self.info = model.eval(), plan, info or {}
        self.coder = ResidualCoder(model, plan)
        self.fingerprint = fingerprint(model, plan)


def save_residual(residual: Residual, path: str | Path) -> None:
    record = {
        "format": FORMAT, "channels": residual.model.channels, "blocks": residual.model.blocks, "previous": residual.model.previous,
        "bounds": residual.model.bounds, "state_dict": residual.model.state_dict(),
        "plan": residual.plan, "info": residual.info,
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load_residual(path: str | Path) -> Residual:
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MedVAEError(f"{path}: not a MedVAE residual model")
    model = ResidualModel(record["channels"], record.get("blocks", 0), int(record.get("previous", 0)), record.get("bounds", False))  # older files: none
    model.load_state_dict(record["state_dict"])
    return Residual(model, record["plan"], record.get("info"))
