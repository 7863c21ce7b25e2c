"""One optimization step, shared by the training loop and ``benchmarks/train_speed.py``."""

from __future__ import annotations

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae.losses import RateDistortionLoss


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
