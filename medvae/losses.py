"""Rate–distortion training loss: ``L = R + λ·D``.

R is the rate in bits per pixel estimated from the model's likelihoods
(``-Σ log2 p / pixels``). D is one of

* ``mse``: ``255² · MSE`` on images in [0, 1]. The 255² factor keeps CompressAI's
  λ scale (0.0018 … 0.0483 for its quality 1 … 8), so its published λ sets carry over.
* ``ms-ssim``: ``1 − MS-SSIM`` (:func:`medvae.metrics.ms_ssim_torch`, data range 1).
* ``ssim-medical``: ``1 − SSIM_med``, the seed paper's SSIM with luminance
  exponent α = 1.15 and contrast/structure exponents β = γ = 0.95:
  ``SSIM_med = mean(l^α · (c·s)^β)`` (with C3 = C2/2, so c·s is the usual cs term
  and β = γ lets the two share one exponent). We use ``1 − SSIM`` rather than
  ``1 / SSIM``: it is zero for a perfect reconstruction, bounded, and its gradient
  does not explode when SSIM is small early in training.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter
from torch import Tensor, nn

from medvae.metrics import ms_ssim_torch

DISTORTIONS = ("mse", "ms-ssim", "ssim-medical")

SSIM_MEDICAL_ALPHA = 1.15
SSIM_MEDICAL_BETA = 0.95


def bits_per_pixel(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated rate: total information content of all latents over the image pixels."""
    return sum((-torch.log2(lik).sum() for lik in likelihoods.values()), torch.zeros(())) / num_pixels


def ssim_medical(x_hat: Tensor, x: Tensor, alpha: float = SSIM_MEDICAL_ALPHA, beta: float = SSIM_MEDICAL_BETA) -> Tensor:
    """Mean of ``l^α · cs^β`` over each image (11×11 Gaussian window, σ 1.5, data range 1): shape (B,)."""
    win = _fspecial_gauss_1d(11, 1.5).repeat([x.shape[1]] + [1] * (x.dim() - 1)).to(x.device, x.dtype)
    c1, c2 = 0.01**2, 0.03**2
    mu1, mu2 = gaussian_filter(x_hat, win), gaussian_filter(x, win)
    sigma1 = gaussian_filter(x_hat * x_hat, win) - mu1**2
    sigma2 = gaussian_filter(x * x, win) - mu2**2
    sigma12 = gaussian_filter(x_hat * x, win) - mu1 * mu2
    luminance = (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1)
    contrast_structure = (2 * sigma12 + c2) / (sigma1 + sigma2 + c2)
    # Negative cs (anti-correlated patches) has no real fractional power; treat it as ~0 similarity.
    return (luminance.clamp(min=1e-6) ** alpha * contrast_structure.clamp(min=1e-6) ** beta).mean(dim=(1, 2, 3))


class RateDistortionLoss(nn.Module):
    """``R + λ·D`` for a model output ``{"x_hat", "likelihoods"}`` and its target ``x`` in [0, 1]."""

    def __init__(self, lmbda: float, distortion: str = "mse"):
        super().__init__()
        if distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {DISTORTIONS}, got {distortion!r}")
        self.lmbda = float(lmbda)
        self.distortion = distortion

    def distortion_of(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """D for images in [0, 1] (training batches, or decoded validation slices)."""
        return self.per_image(x_hat, x).mean()

    def per_image(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """D of each image of a batch: shape (B,)."""
        if self.distortion == "mse":
            return 255.0**2 * torch.mean((x_hat - x) ** 2, dim=(1, 2, 3))
        if self.distortion == "ms-ssim":
            return 1.0 - ms_ssim_torch(x_hat.clamp(0, 1), x).reshape(-1)
        return 1.0 - ssim_medical(x_hat.clamp(0, 1), x)

    def forward(self, output: dict[str, Any], x: Tensor) -> dict[str, Tensor]:
        """The loss terms. A variable-rate model's output carries a λ per image (``"lmbda"``),
        which replaces :attr:`lmbda`: ``R + mean(λ_i·D_i)``."""
        n, _, h, w = x.shape
        x_hat = output["x_hat"].float()
        bpp = bits_per_pixel(output["likelihoods"], n * h * w)
        per_image = self.per_image(x_hat, x)
        if "x_hat_steps" in output:  # a progressive model: every iteration's reconstruction counts
            steps = [self.per_image(step.float(), x) for step in output["x_hat_steps"]]
            per_image = (torch.stack(steps) * output["step_weights"].reshape(-1, 1)).mean(dim=0)
        distortion = per_image.mean()
        weighted = self.lmbda * distortion if "lmbda" not in output else (output["lmbda"].float() * per_image).mean()
        mse = torch.mean((x_hat.detach() - x) ** 2)
        return {
            "loss": bpp + weighted,
            "bpp": bpp,
            "mse": mse,
            "distortion": distortion,
            "psnr_normalized": -10.0 * torch.log10(mse.clamp(min=1e-12)),
        }
