"""Building blocks shared by the model families."""

from __future__ import annotations

import torch
from compressai.layers import GDN, ResidualBlock, conv1x1, conv3x3
from compressai.models.utils import conv, deconv
from torch import Tensor, nn


def round_straight_through(x: Tensor) -> Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def analysis_transform(in_channels: int, N: int, M: int, residual: bool) -> nn.Sequential:
    """g_a: four stride-2 5×5 convolutions with GDN.

    With ``residual``, a residual block follows the GDNs at 1/4 and 1/8 resolution.
    None at 1/2: there a block would cost about three times the next convolution
    (2·9·N² MACs per pixel at 4× the pixels) for little gain.
    """
    layers: list[nn.Module] = []
    channels = [in_channels, N, N, N]
    for i, c_in in enumerate(channels):
        c_out = M if i == 3 else N
        layers.append(conv(c_in, c_out))
        if i < 3:
            layers.append(GDN(N))
            if residual and i >= 1:
                layers.append(ResidualBlock(N, N))
    return nn.Sequential(*layers)


def synthesis_transform(in_channels: int, N: int, M: int, residual: bool) -> nn.Sequential:
    """g_s: mirror of :func:`analysis_transform` (transposed convolutions, IGDN, residual
    blocks at 1/8 and 1/4 resolution)."""
    layers: list[nn.Module] = []
    channels = [M, N, N, N]
    for i, c_in in enumerate(channels):
        c_out = in_channels if i == 3 else N
        layers.append(deconv(c_in, c_out))
        if i < 3:
            layers.append(GDN(N, inverse=True))
            if residual and i <= 1:
                layers.append(ResidualBlock(N, N))
    return nn.Sequential(*layers)


class LatentFusion(nn.Module):
    """Decoder-side residual fusion: ``ŷ_f = ŷ + f([ŷ, side])``.

    ``side`` is a tensor the decoder computes itself from the bitstream (the
    hyper-decoder's features, or nothing for factorized models), so the fusion
    never needs a value from before quantization.
    """

    def __init__(self, M: int, side_channels: int = 0):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(M + side_channels, M),
            nn.LeakyReLU(inplace=True),
            conv1x1(M, M),
        )

    def forward(self, y_hat: Tensor, side: Tensor | None = None) -> Tensor:
        inputs = y_hat if side is None else torch.cat([y_hat, side], dim=1)
        return y_hat + self.body(inputs)
