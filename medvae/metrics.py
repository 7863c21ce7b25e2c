"""Rate and quality metrics: the one implementation used by training, tests and evaluation.

Every metric is computed on the decoded *integers* at the image's native bit
depth (so 12-bit CT is judged on its 4095 levels, not on an 8-bit rendering). Rates come from real bytes, never from likelihoods.

Conventions
-----------
- ``bpp`` = 8 × bytes / (H × W).
- ``compression_ratio`` = (H × W × BitsStored / 8) / bytes, i.e. against the bits
  the image really carries, not the 16-bit container it is stored in.
- ``psnr`` uses peak = 2**BitsStored − 1 (report the bit depth next to it).
- ``windowed_psnr`` rescales to Hounsfield units, clips both images to the
  display window and uses peak = window width: what a reader sees.
- ``ms_ssim`` runs pytorch-msssim on images normalized with
  :func:`medvae.intensity.normalize` (data_range = 1); see its docstring for
  what happens with images too small for five scales.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import numpy as np

from medvae.intensity import default_value_range, normalize

if TYPE_CHECKING:  # torch is imported where needed: rate metrics serve `medvae info` without it
    import torch

#: CT display windows as (center, width) in HU: what radiologists look at.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

#: Default MS-SSIM Gaussian window size and number of scales (Wang et al. 2003).
MS_SSIM_WIN = 11
MS_SSIM_LEVELS = 5


# --------------------------------------------------------------------------- rate


def bpp(n_bytes: float, shape: tuple[int, int]) -> float:
    """Bits per pixel of a bitstream of ``n_bytes`` coding an image of ``shape`` (H, W)
    (a fraction for a slice's share of a series stream)."""
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image shape {shape}")
    return 8.0 * float(n_bytes) / (h * w)


def compression_ratio(n_bytes: float, shape: tuple[int, int], bits_stored: int) -> float:
    """Compression ratio against the bits the image stores.

    ``(H × W × bits_stored / 8) / n_bytes``: a 512×512 12-bit slice is 393,216
    bytes of information, whatever container it sits in. ``inf`` for 0 bytes.
    """
    h, w = int(shape[0]), int(shape[1])
    raw = h * w * int(bits_stored) / 8.0
    return math.inf if n_bytes <= 0 else raw / float(n_bytes)


# ------------------------------------------------------------------------ fidelity


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error in the arrays' own units (computed in float64)."""
    a, b = _pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(mse: float, peak: float) -> float:
    """``10·log10(peak² / mse)`` in dB; ``inf`` when ``mse`` is 0."""
    if mse < 0 or peak <= 0:
        raise ValueError(f"need mse >= 0 and peak > 0, got mse={mse}, peak={peak}")
    return math.inf if mse == 0 else 10.0 * math.log10(float(peak) ** 2 / float(mse))


def stored_bits(bits_stored: int | None, dtype) -> int:
    """The bit depth PSNR peaks are taken at: the DICOM Bits Stored when known (non-zero),
    else the width of ``dtype``."""
    return int(bits_stored or 0) or 8 * np.dtype(dtype).itemsize


def psnr(reference: np.ndarray, decoded: np.ndarray, bits_stored: int) -> float:
    """PSNR in dB with peak ``2**bits_stored − 1`` on the stored integers; ``inf`` if identical."""
    return psnr_from_mse(mse(reference, decoded), float(2 ** int(bits_stored) - 1))


def to_hu(image: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored values to physical units (HU for CT): ``image·slope + intercept`` in float64."""
    return np.asarray(image, dtype=np.float64) * float(slope) + float(intercept)


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Clip ``hu`` to the display window ``[center − width/2, center + width/2]``."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return np.clip(hu, center - width / 2.0, center + width / 2.0)


def windowed_psnr(
    reference: np.ndarray,
    decoded: np.ndarray,
    center: float,
    width: float,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> float:
    """PSNR inside a display window (peak = ``width``), computed in rescaled units.

    Both images go to HU with ``slope``/``intercept`` (DICOM RescaleSlope and
    RescaleIntercept), are clipped to the window, and compared. Errors outside
    the window are invisible to a reader at that window, so they do not count.
    """
    ref = window(to_hu(reference, slope, intercept), center, width)
    dec = window(to_hu(decoded, slope, intercept), center, width)
    return psnr_from_mse(mse(ref, dec), float(width))


def max_abs_error(a: np.ndarray, b: np.ndarray) -> int:
    """Largest absolute difference between two integer images (the near-lossless bound)."""
    a, b = _pair(a, b)
    if a.size == 0:
        return 0
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))


# ------------------------------------------------------------------------- MS-SSIM


def ms_ssim_settings(height: int, width: int) -> tuple[int, int]:
    """(win_size, levels) used for an image of this size.

    pytorch-msssim needs ``min(H, W) > (win_size − 1)·16`` for its 5 scales:
    the standard window of 11 needs a side of at least 161 px. For sides 33 to
    160 we keep 5 scales and shrink the (odd) Gaussian window, down to 3. Below
    33 px five scales are meaningless, so we fall back explicitly to
    single-scale SSIM (levels = 1) with the largest odd window that fits
    (at most 11). Never raises for a non-empty image.
    """
    side = min(int(height), int(width))
    if side <= 0:
        raise ValueError("empty image")
    for win in range(MS_SSIM_WIN, 2, -2):
        if side > (win - 1) * 2 ** (MS_SSIM_LEVELS - 1):
            return win, MS_SSIM_LEVELS
    return min(MS_SSIM_WIN, side if side % 2 else side - 1), 1


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM of (N, C, H, W) tensors, per image (shape (N,)), differentiable.

    Uses :func:`ms_ssim_settings` to choose the window and scales, so small
    training crops work too.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    win, levels = ms_ssim_settings(x.shape[-2], x.shape[-1])
    if levels == 1:
        return _ssim(x, y, data_range=data_range, size_average=False, win_size=win)
    return _ms_ssim(x, y, data_range=data_range, size_average=False, win_size=win)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray, lo: int, hi: int) -> float:
    """MS-SSIM in [0, 1] of two integer images normalized with ``normalize(·, lo, hi)``.

    ``lo``/``hi`` are the value range the codec maps to [0, 1] (by default the
    reference's own min and max). Computed in float64 with data_range = 1;
    identical images give exactly 1. Small images: see :func:`ms_ssim_settings`.
    """
    import torch

    reference, decoded = _pair(reference, decoded)
    if reference.ndim != 2:
        raise ValueError(f"expected 2-D images, got shape {reference.shape}")
    x = torch.from_numpy(normalize(reference, lo, hi).astype(np.float64))[None, None]
    y = torch.from_numpy(normalize(decoded, lo, hi).astype(np.float64))[None, None]
    with torch.no_grad():
        value = float(ms_ssim_torch(x, y, data_range=1.0)[0])
    return min(max(value, 0.0), 1.0)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, ``−10·log10(1 − value)``; ``inf`` at 1 (as in the R-D literature)."""
    value = float(value)
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


# ------------------------------------------------------------------ torch, training


def psnr_torch(x: torch.Tensor, x_hat: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Mean over the batch of per-image PSNR (dB) for (N, ...) tensors in [0, peak].

    Returns a 0-dim tensor; an image reconstructed exactly contributes ``inf``.
    """
    import torch

    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    err = (x.detach().double() - x_hat.detach().double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(peak**2 / err)).mean()


# --------------------------------------------------------------------- all at once


def image_metrics(
    reference: np.ndarray,
    decoded: np.ndarray,
    n_bytes: float,
    bits_stored: int,
    lo: int | None = None,
    hi: int | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """Every metric of one decoded image, as a flat dict (one CSV row's worth).

    Keys: ``bytes, bpp, compression_ratio, psnr, mse, max_abs_error, ms_ssim,
    ms_ssim_db`` and ``psnr_<window>`` for each of ``windows`` (pass
    :data:`CT_WINDOWS` for CT, ``None`` for none). ``lo``/``hi`` default to the
    reference's own range (:func:`medvae.intensity.default_value_range`).
    """
    reference, decoded = _pair(reference, decoded)
    if lo is None or hi is None:
        lo, hi = default_value_range(reference)
    e = mse(reference, decoded)
    value = ms_ssim(reference, decoded, lo, hi)
    row: dict[str, float] = {
        "bytes": n_bytes,  # a series codec's share of its stream: bytes over slices
        "bpp": bpp(n_bytes, reference.shape),
        "compression_ratio": compression_ratio(n_bytes, reference.shape, bits_stored),
        "psnr": psnr_from_mse(e, float(2 ** int(bits_stored) - 1)),
        "mse": e,
        "max_abs_error": max_abs_error(reference, decoded),
        "ms_ssim": value,
        "ms_ssim_db": ms_ssim_db(value),
    }
    for name, (center, width) in (windows or {}).items():
        row[f"psnr_{name}"] = windowed_psnr(reference, decoded, center, width, slope, intercept)
    return row
