"""Scale-hyperprior models: ``balle2018`` and ``medvae`` (the flagship)."""

from __future__ import annotations

from typing import Any

from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import ResidualBlock, conv1x1
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from medvae.models.layers import LatentFusion, analysis_transform, synthesis_transform
from medvae.models.registry import register_model


@register_model("balle2018")
class Balle2018(CompressionModel):
    r"""Scale hyperprior of Ballé, Minnen, Singh, Hwang and Johnston (ICLR 2018), single channel.

    .. code-block:: none

                  ┌───┐    y     ┌───┐  z  ┌───┐ z_hat      z_hat ┌───┐
            x ──►─┤g_a├──►─┬──►──┤h_a├──►──┤ Q ├───►───·⋯⋯·───►───┤h_s├─┐
                  └───┘    │     └───┘     └───┘        EB        └───┘ │
                           ▼                                            │ scales_hat
                         ┌─┴─┐                                          │
                         │ Q │                                          │
                         └─┬─┘                                          │
                     y_hat ▼                                            │
                           ·  GC ◄──────────────────────────────────────┘
                     y_hat ▼
                  ┌───┐    │
        x_hat ──◄─┤g_s├────┘
                  └───┘

        EB: EntropyBottleneck (z), GC: GaussianConditional (y, zero mean)

    Args:
        N: channels of the hidden layers and of z.
        M: channels of the latent y.
        in_channels: image channels (1 for grayscale medical images).
    """

    residual = False

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1):
        super().__init__()
        self.config = {"N": int(N), "M": int(M), "in_channels": int(in_channels)}
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.g_a = analysis_transform(in_channels, N, M, residual=self.residual)
        self.g_s = synthesis_transform(in_channels, N, M, residual=self.residual)
        self.h_a = self.build_hyper_analysis(N, M)
        self.h_s = self.build_hyper_synthesis(N, M)

    @staticmethod
    def build_hyper_analysis(N: int, M: int) -> nn.Module:
        return nn.Sequential(
            conv(M, N, stride=1, kernel_size=3),
            nn.ReLU(inplace=True),
            conv(N, N),
            nn.ReLU(inplace=True),
            conv(N, N),
        )

    @staticmethod
    def build_hyper_synthesis(N: int, M: int) -> nn.Module:
        return nn.Sequential(
            deconv(N, N),
            nn.ReLU(inplace=True),
            deconv(N, N),
            nn.ReLU(inplace=True),
            conv(N, M, stride=1, kernel_size=3),
            nn.ReLU(inplace=True),
        )

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (4 + 2)

    # The decoder half: each step reads only what the bitstream carries (z_hat, y_hat).
    def hyper_decode(self, z_hat: Tensor) -> Tensor:
        """Hyper-decoder features computed from ``z_hat``."""
        return self.h_s(z_hat)

    def scales_from(self, features: Tensor) -> Tensor:
        """Standard deviations of y given the hyper-decoder features."""
        return features

    def synthesize(self, y_hat: Tensor, features: Tensor) -> Tensor:
        """Image from ``y_hat`` (and, in subclasses, the hyper-decoder features)."""
        return self.g_s(y_hat)

    def forward(self, x: Tensor) -> dict[str, Any]:
        y, z = self.analyze(x)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        features = self.hyper_decode(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, self.scales_from(features))
        x_hat = self.synthesize(y_hat, features)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def analyze(self, x: Tensor) -> list[Tensor]:
        """The latents the encoder codes for ``x``: ``[y, z]``."""
        y = self.g_a(x)
        return [y, self.h_a(abs(y))]  # abs(), not torch.abs: the exact twin runs this method too

    def compress(self, x: Tensor) -> dict[str, Any]:
        return self.compress_latents(self.analyze(x))

    def compress_latents(self, latents: list[Tensor]) -> dict[str, Any]:
        """Entropy-code ``[y, z]`` (from :meth:`analyze`, or refined by :mod:`medvae.refine`)."""
        y, z = latents
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes = self.gaussian_conditional.build_indexes(self.scales_from(self.hyper_decode(z_hat)))
        y_strings = self.gaussian_conditional.compress(y, indexes)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:])}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> dict[str, Tensor]:
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        features = self.hyper_decode(z_hat)
        indexes = self.gaussian_conditional.build_indexes(self.scales_from(features))
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
        return {"x_hat": self.synthesize(y_hat, features)}


class _HyperSynthesisWithSkip(nn.Module):
    """h_s with a residual shortcut: ``trunk(z_hat) + 1x1(upsample×4(z_hat))``."""

    def __init__(self, N: int, M: int):
        super().__init__()
        self.trunk = nn.Sequential(
            deconv(N, N),
            nn.LeakyReLU(inplace=True),
            ResidualBlock(N, N),
            deconv(N, N),
            nn.LeakyReLU(inplace=True),
            conv(N, M, stride=1, kernel_size=3),
        )
        self.skip = nn.Sequential(nn.Upsample(scale_factor=4, mode="nearest"), conv1x1(N, M))

    def forward(self, z_hat: Tensor) -> Tensor:
        return self.trunk(z_hat) + self.skip(z_hat)


@register_model("medvae")
class MedVAE(Balle2018):
    r"""MedVAE: scale hyperprior with residual skip-fusion in the main and hyperprior branches.

    .. code-block:: none

                 ┌────────┐  y    ┌──────────┐ z ┌───┐ z_hat     z_hat ┌──────────────┐
           x ──►─┤g_a + RB├──►─┬─►┤h_a + RB  ├─►─┤ Q ├──►──·⋯⋯·──►──┬──┤ trunk (+RB)  ├──┐
                 └────────┘    │  └──────────┘   └───┘     EB       │  └──────────────┘  ├─(+)─► F
                               ▼                                    └──┤ up×4, 1×1    ├──┘     │
                             ┌─┴─┐                                     └──────────────┘        │
                             │ Q │                                  scales = ReLU(1×1(F)) ◄────┤
                             └─┬─┘                                                             │
                         y_hat ▼                                                               │
                               ·  GC ◄── scales                                                │
                         y_hat ▼                                                               │
                               ├───────────────►┌──────────────────────┐                       │
                               │                │ y_f = y_hat +        │◄──────────────────────┘
                               └───────────────►│   f([y_hat, F])      │   decoder-side fusion
                                                └──────────┬───────────┘
                                     ┌────────┐            │ y_f
                          x_hat ◄────┤g_s + RB├────◄───────┘
                                     └────────┘

        RB: residual block (two 3×3 convs, identity shortcut); in g_a/g_s at 1/4 and 1/8 resolution
        F:  hyper-decoder features (M channels at the resolution of y), from z_hat only
        f:  3×3 conv, LeakyReLU, 1×1 conv on the concatenation [y_hat, F]

    Everything right of the entropy coders (z_hat, F, scales, y_hat, y_f) is
    computed from the bitstream alone; no encoder-side tensor reaches g_s.
    """

    residual = True

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1):
        super().__init__(N=N, M=M, in_channels=in_channels)
        self.scale_head = nn.Sequential(nn.LeakyReLU(), conv1x1(M, M), nn.ReLU())
        self.fusion = LatentFusion(M, side_channels=M)

    @staticmethod
    def build_hyper_analysis(N: int, M: int) -> nn.Module:
        return nn.Sequential(
            conv(M, N, stride=1, kernel_size=3),
            nn.LeakyReLU(inplace=True),
            ResidualBlock(N, N),
            conv(N, N),
            nn.LeakyReLU(inplace=True),
            conv(N, N),
        )

    @staticmethod
    def build_hyper_synthesis(N: int, M: int) -> nn.Module:
        return _HyperSynthesisWithSkip(N, M)

    def scales_from(self, features: Tensor) -> Tensor:
        return self.scale_head(features)

    def synthesize(self, y_hat: Tensor, features: Tensor) -> Tensor:
        return self.g_s(self.fusion(y_hat, features))
