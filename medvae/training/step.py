"""One optimization step, shared by the training loop and ``benchmarks/train_speed.py``."""

from __future__ import annotations

from pathlib import Path

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae.losses import RateDistortionLoss


#: CPU flags of native bfloat16 arithmetic (Linux ``/proc/cpuinfo`` names).
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags, or None where ``cpuinfo`` cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def slow_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether bfloat16 autocast would slow training on ``device``: an x86 CPU known to lack
    native bf16 (:data:`NATIVE_BF16_FLAGS`), where PyTorch emulates it. Measured on an AVX2-only
    CPU: 9–15 s a ``medvae-vr`` step (batch 8, 128² crops) against 0.4 s in float32; with
    AVX-512-BF16 it is 1.9 times *faster* than float32. ``flags``: default :func:`cpu_flags`."""
    flags = cpu_flags() if flags is None else flags
    return device.type == "cpu" and flags is not None and "avx2" in flags and not flags & NATIVE_BF16_FLAGS


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
