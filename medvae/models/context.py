"""``medvae-ctx``: variable-rate MedVAE with a mean-scale hyperprior and a checkerboard context.

The scale hyperprior codes each element of ``y`` with a zero-mean Gaussian whose scale
comes from ``z`` alone. Here the Gaussian also gets a mean, and half of ``y`` gets a
context too (He et al., "Checkerboard context model", CVPR 2021; ELIC, CVPR 2022): the
*anchors*, positions with ``(row + column)`` even, are coded first from the hyperprior
alone; the other half is then coded with parameters that also read the decoded anchors
around it (a 5×5 convolution masked to anchor taps). Both passes are parallel over the
whole latent, so decoding costs two passes, not one per pixel.

Everything else is ``medvae-vr``: gain units for a continuous quality, the residual
skip-fusion before ``g_s``, and the same transforms, so weights start from a trained
``medvae-vr``. The scale path is that model's ``scale_head``, and the context adds a
correction to its scales and the means, from a last layer that starts at zero: the
model starts out coding exactly as its base does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from compressai.layers import conv1x1
from torch import Tensor, nn

from medvae.models.layers import round_straight_through
from medvae.models.registry import register_model
from medvae.models.variable_rate import LMBDAS, MedVAEVR

#: The context convolution's kernel (5×5, as in the checkerboard paper).
CONTEXT_KERNEL = 5


def anchor_mask(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(1, 1, H, W) bool: True at anchors, the positions with ``(row + column)`` even."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return ((rows + cols) % 2 == 0)[None, None]


class CheckerboardContext(nn.Conv2d):
    """A 5×5 convolution that reads anchors only when centred on a non-anchor.

    From a non-anchor, the anchors lie at odd ``|dr| + |dc|``; the other taps are masked
    to zero, so the outputs the coder uses (at non-anchors) never depend on a value not
    yet decoded, whatever the input holds elsewhere.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = CONTEXT_KERNEL):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = torch.arange(kernel_size) - kernel_size // 2
        self.register_buffer("mask", ((k[:, None] + k[None, :]) % 2 != 0).float()[None, None], persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MeanScaleHead(nn.Module):
    """Scales and means of y from the hyper-decoder's features and a context.

    ``scales = ReLU(scale(F) + Δ)``, ``(Δ, means) = context([F, ctx])``: ``scale`` is the
    MedVAE scale head without its ReLU (same parameter names, so its weights carry over),
    and the context network's last layer starts at zero.
    """

    def __init__(self, M: int, context_channels: int):
        super().__init__()
        self.scale = nn.Sequential(nn.LeakyReLU(), conv1x1(M, M))
        self.context = nn.Sequential(
            conv1x1(M + context_channels, 2 * M),
            nn.LeakyReLU(inplace=True),
            conv1x1(2 * M, 2 * M),
            nn.LeakyReLU(inplace=True),
            conv1x1(2 * M, 2 * M),
        )
        nn.init.zeros_(self.context[-1].weight)
        nn.init.zeros_(self.context[-1].bias)
        self.M = M

    def forward(self, features: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scales and means; ``context`` None (the anchors) reads as zeros."""
        if context is None:
            context = features.new_zeros((features.shape[0], self.context[0].in_channels - self.M, *features.shape[2:]))
        delta, means = self.context(torch.cat([features, context], dim=1)).split(self.M, dim=1)
        return torch.relu(self.scale(features) + delta), means


@register_model("medvae-ctx")
class MedVAECtx(MedVAEVR):
    r"""``medvae-vr`` with means and a checkerboard context (see the module docstring).

    .. code-block:: none

                 ┌────────┐ y  ┌──────┐ y·g  ┌───┐  ┌───┐ z_hat  ┌─────────────┐
           x ──►─┤g_a + RB├──►─┤ gain ├──┬──►┤h_a├─►┤ Q ├──►─·⋯·─►┤ h_s (+skip) ├──► F
                 └────────┘    └──────┘  │   └───┘  └───┘   EB   └─────────────┘
                                         │
               pass 1, anchors:          ├──► head(F, 0) ──► scales, means ──► GC ──► ŷ_a
               pass 2, the rest:         └──► head(F, ctx(ŷ_a)) ──► scales, means ──► GC ──► ŷ_n
                                              ctx: 5×5 convolution masked to anchor taps
                                 ┌──────────────┐ ┌──────────────────┐ ┌────────┐
           ŷ = ŷ_a + ŷ_n ───────►┤ inverse gain ├►┤ fusion with F    ├►┤g_s + RB├──► x_hat
                                 └──────────────┘ └──────────────────┘ └────────┘

        GC: Gaussian conditional with means, ŷ = round(y − mean) + mean
        head: scales = ReLU(scale(F) + Δ), (Δ, means) = 1×1 convolutions of [F, ctx]
    """

    #: Weights of this family may start from a trained ``medvae-vr`` (all but the context).
    base_family = "medvae-vr"
    #: Parameters named differently in the base family: the scale head moved into the mean–scale head.
    base_parameter_names = {"scale_head.scale.": "scale_head."}

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1, lmbdas: Sequence[float] = LMBDAS):
        super().__init__(N=N, M=M, in_channels=in_channels, lmbdas=lmbdas)
        self.context_model = CheckerboardContext(M, 2 * M)
        self.scale_head = MeanScaleHead(M, 2 * M)

    def parameters_from(self, features: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Scales and means of y given the hyper-decoder features and the context (None: anchors).
        The exact twin runs this method too."""
        return self.scale_head(features, context)

    def conditional_parameters(self, y: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """Scales and means of every element of y: the anchors' from ``features`` alone, the
        rest's also from the anchors of ``round(y − means) + means`` (straight-through gradients,
        rounded as the coder rounds)."""
        anchor_scales, anchor_means = self.parameters_from(features, None)
        anchors = anchor_mask(*y.shape[-2:], device=y.device)
        y_anchors = torch.where(anchors, round_straight_through(y - anchor_means) + anchor_means, torch.zeros_like(y))
        scales, means = self.parameters_from(features, self.context_model(y_anchors))
        return torch.where(anchors, anchor_scales, scales), torch.where(anchors, anchor_means, means)

    def _forward(self, x: Tensor) -> dict[str, Any]:
        """Rates from the noisy-y likelihoods (training) or the rounded ones (evaluation); ``g_s``
        is fed ŷ rounded around the means with straight-through gradients, what the decoder sees."""
        y, z = self.analyze(x)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        features = self.hyper_decode(z_hat)
        scales, means = self.conditional_parameters(y, features)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means)
        y_hat = round_straight_through(y - means) + means
        return {"x_hat": self.synthesize(y_hat, features), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress_latents(self, latents: list[Tensor]) -> dict[str, Any]:  # pragma: no cover - the exact twin codes
        raise NotImplementedError("medvae-ctx is coded by its exact twin (medvae.Codec)")

    def decompress(self, strings, shape):  # pragma: no cover - the exact twin decodes
        raise NotImplementedError("medvae-ctx is decoded by its exact twin (medvae.Codec)")
