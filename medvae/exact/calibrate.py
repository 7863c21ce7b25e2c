"""Calibration: how many fractional bits each exact layer's output gets.

The float model runs (eval mode, latents rounded as the coder rounds them) on a set
of images while hooks record the largest magnitude each layer outputs. A layer's
output then gets the most fractional bits that keep :data:`MARGIN` times that
magnitude inside the 24-bit activation range: about 17 significant bits for the
largest values seen. Values beyond the margin saturate, which costs fidelity on
such an image, never exactness.

Calibration runs float convolutions, so it is done once, when weights are saved for
coding (:func:`medvae.checkpoint.save_model`, the shipped-weights export), and its
result, the *plan*, is stored with the weights; decoders never calibrate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models import CompressionModel

from medvae.exact.fixed import frac_for
from medvae.intensity import default_value_range, normalize

#: Headroom above the largest magnitude seen in calibration (a factor of 64 to 128).
MARGIN = 64.0
#: Key of the image input in a plan; [0, 1] needs no margin.
INPUT = "x"

Plan = dict[str, int]


def synthetic_images(size: int = 192, seed: int = 0) -> list[np.ndarray]:
    """Deterministic test patterns in 16 bits: a CT-like phantom, soft blobs, a gradient, edges, noise.

    They exercise the range of activations a model meets (flat areas, sharp edges,
    noise) when no real images are at hand.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    phantom = np.full((size, size), 0.0)
    body = (yy - 0.5) ** 2 / 0.42**2 + (xx - 0.5) ** 2 / 0.36**2 < 1
    phantom[body] = 0.3 + rng.normal(0, 0.01, body.sum())
    phantom[(yy - 0.6) ** 2 + (xx - 0.5) ** 2 < 0.004] = 0.9
    phantom[(yy - 0.4) ** 2 + (xx - 0.35) ** 2 < 0.01] = 0.05
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02) for cy, cx in rng.uniform(0.1, 0.9, (6, 2)))
    blobs = blobs / blobs.max()
    gradient = (yy + xx) / 2
    edges = ((np.floor(yy * 8) + np.floor(xx * 8)) % 2) * 0.8 + 0.1
    noise = rng.uniform(0, 1, (size, size))
    return [np.clip(a, 0, 1).astype(np.float32) for a in (phantom, blobs, gradient, edges, noise)]


def _as_unit(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as given; integers mapped by their own range, as the codec maps them."""
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    lo, hi = default_value_range(image)
    return normalize(image, lo, hi)


@torch.no_grad()
def layer_peaks(model: torch.nn.Module, run: Callable[[], object]) -> dict[str, float]:
    """The largest magnitude each named submodule of ``model`` takes in (``name:in``) and puts
    out (``name``) while ``run()`` runs it, in eval mode."""
    peaks: dict[str, float] = defaultdict(float)

    def record(key: str, value) -> None:
        value = value[0] if isinstance(value, tuple) else value
        if isinstance(value, torch.Tensor) and value.numel():
            peaks[key] = max(peaks[key], float(value.detach().abs().max()))

    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_hook(lambda m, args, out, name=name: record(name, out)))
        handles.append(module.register_forward_pre_hook(lambda m, args, name=name: record(f"{name}:in", args)))
    was_training = model.training
    model.eval()
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return peaks


def plan_from_peaks(peaks: dict[str, float], input_peak: float = 1.0) -> Plan:
    """Fractional bits per layer output (:data:`MARGIN` × its peak in range), and the input's."""
    plan = {name: frac_for(peak, MARGIN) for name, peak in peaks.items()}
    plan[INPUT] = frac_for(input_peak, 1.0)
    return dict(sorted(plan.items()))


@torch.no_grad()
def calibrate(model: CompressionModel, images: Iterable[np.ndarray] | None = None) -> Plan:
    """Fractional bits for every layer output the exact twin needs, from ``images`` and the
    synthetic patterns (integer images are mapped as the codec maps them; floats are taken in [0, 1])."""

    def run() -> None:
        stride = model.downsampling_factor
        device = next(model.parameters()).device
        for image in [*(images or []), *synthetic_images()]:
            x = torch.from_numpy(_as_unit(np.asarray(image)))[None, None].to(device)
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % stride, 0, (-h) % stride), mode="replicate")
            for quality in qualities:  # a variable-rate model: every level's activations
                if quality is not None:
                    model.quality = quality
                model(x)

    levels = getattr(model, "levels", None) if hasattr(model, "gain") else None
    qualities = [None] if levels is None else list(range(1, levels + 1))
    kept = getattr(model, "quality", None)
    try:
        return plan_from_peaks(layer_peaks(model, run))
    finally:
        if levels is not None:
            model.quality = kept
