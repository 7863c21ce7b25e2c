"""Validation on full held-out slices through the real codec: real bytes, native bit depth."""

from __future__ import annotations

import numpy as np
import torch
from compressai.models import CompressionModel

from medvae import metrics
from medvae.codec import Codec
from medvae.intensity import default_value_range, normalize
from medvae.io.slices import Slice
from medvae.losses import RateDistortionLoss


def validate(model: CompressionModel, images: list[Slice], criterion: RateDistortionLoss, device: torch.device) -> tuple[dict[str, float], np.ndarray | None]:
    """Code every image for real and return mean metrics plus a preview (original | decoded | error).

    The loss is ``bpp + λ·D`` with the bpp counted from the bytes written and D
    measured on the decoded integers (renormalized), so the best checkpoint is
    chosen on what users will get. Leaves the model in eval mode; the caller
    switches it back to training.
    """
    if not images:
        return {}, None
    codec = Codec(model, device=device, update_tables=True)
    rows = []
    preview = None
    for item in images:
        img = item.pixels
        data = codec.compress(img, bits_stored=item.bits_stored)
        decoded, estimated_bpp = codec.reconstruct(img)
        lo, hi = default_value_range(img)
        x = torch.from_numpy(normalize(img, lo, hi))[None, None]
        x_hat = torch.from_numpy(normalize(decoded, lo, hi))[None, None]
        bpp = metrics.bpp(len(data), img.shape)
        rows.append(
            {
                "loss": bpp + criterion.lmbda * float(criterion.distortion_of(x_hat, x)),
                "bpp": bpp,
                "bpp_estimated": estimated_bpp,
                "psnr": metrics.psnr(img, decoded, item.bits_stored),
                "ms_ssim": metrics.ms_ssim(img, decoded, lo, hi),
                "max_abs_error": float(metrics.max_abs_error(img, decoded)),
            }
        )
        if preview is None:
            error = np.abs(x_hat[0, 0].numpy() - x[0, 0].numpy())
            error = error / max(float(error.max()), 1e-6)
            preview = np.concatenate([x[0, 0].numpy(), x_hat[0, 0].numpy(), error], axis=1)
    means = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    return means, preview
