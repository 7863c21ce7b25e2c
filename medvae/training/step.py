"""One optimization step, shared by the training loop and ``benchmarks/train_speed.py``."""

from __future__ import annotations

from pathlib import Path

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae.allocator import keep_freed_memory
from medvae.losses import RateDistortionLoss


#: CPU flags of bfloat16 arithmetic (Linux ``/proc/cpuinfo`` names).
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags, or None where ``cpuinfo`` cannot be read (not Linux)."""
    lines = _cpuinfo_lines(cpuinfo)
    return None if lines is None else {flag for line in lines if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's ``vendor_id`` (``GenuineIntel``, ``AuthenticAMD``), or None where unknown."""
    lines = _cpuinfo_lines(cpuinfo) or []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")), None)


def _cpuinfo_lines(cpuinfo: Path) -> list[str] | None:
    try:
        return cpuinfo.read_text().splitlines()
    except OSError:
        return None


def slow_bf16(device: torch.device, flags: set[str] | None = None, vendor: str | None = None) -> str | None:
    """Why bfloat16 autocast would train slower than float32 on ``device``, or None where it is not
    known to. Measured on 2 cores, ``medvae``/``medvae-ctx`` steps (batch 8, 128² crops):

    * an x86 CPU without :data:`NATIVE_BF16_FLAGS` (AVX2 alone) emulates bf16: 9–15 s a step
      against 0.4 s in float32;
    * an AMD CPU with AVX-512-BF16 (Zen 4): 1.9 times *faster* than float32;
    * an Intel CPU with AVX-512-BF16 but no AMX (a Xeon whose AMX the VM hides): 0.70–0.77 times
      float32's speed (``python benchmarks/train_speed.py --crop 128 --batch 8 --N 64 --M 96 [--amp]``);
      Intel's bf16 speed comes with AMX.

    ``flags``, ``vendor``: default :func:`cpu_flags`, :func:`cpu_vendor`."""
    flags = cpu_flags() if flags is None else flags
    if device.type != "cpu" or flags is None or "avx2" not in flags or "amx_bf16" in flags:
        return None
    if "avx512_bf16" not in flags:
        return "no native bfloat16 (AVX-512-BF16 or AMX): emulated, measured 9-15 s a step against 0.4 s"
    vendor = cpu_vendor() if vendor is None else vendor
    if vendor == "GenuineIntel":
        return "an Intel CPU with AVX-512-BF16 but no AMX: measured 0.70-0.77 times float32's speed"
    return None


def train_step(
    net: nn.Module,
    model: CompressionModel,
    x: Tensor,
    criterion: RateDistortionLoss,
    optimizer: torch.optim.Optimizer,
    aux_optimizer: torch.optim.Optimizer,
    clip_grad: float = 0.0,
    amp: bool = False,
) -> dict[str, float]:
    """Update the transforms on ``R + λD`` and the entropy-bottleneck quantiles on the aux loss.

    ``net`` is what runs the forward pass (the model, or its DistributedDataParallel
    wrapper); ``model`` is the bare model (for ``aux_loss``). Returns the loss terms.
    """
    keep_freed_memory()  # a cached no-op after the first step: 13-18 % more images/s on 2 CPU cores (docs/variable-rate.md)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
        output = net(x)
    losses = criterion(output, x)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip_grad)
    optimizer.step()
    aux_loss = model.aux_loss()
    if aux_loss.requires_grad:  # false for models without an entropy bottleneck (rnn-conv)
        aux_optimizer.zero_grad(set_to_none=True)
        aux_loss.backward()
        aux_optimizer.step()
    return {k: v.item() for k, v in losses.items()} | {"aux_loss": aux_loss.item()}
