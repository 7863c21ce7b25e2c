"""Factorized-prior models: ``bls2017`` and ``bls-residual``."""

from __future__ import annotations

from typing import Any

from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor

from medvae.models.layers import LatentFusion, analysis_transform, synthesis_transform
from medvae.models.registry import register_model


@register_model("bls2017")
class BLS2017(CompressionModel):
    r"""Factorized prior of Ballé, Laparra and Simoncelli (ICLR 2017 / 2018), single channel.

    .. code-block:: none

                  ┌───┐    y     ┌───┐  y_hat        y_hat   ┌───┐
            x ──►─┤g_a├──►──────►┤ Q ├───►────·⋯⋯·────►───┤g_s├──►── x_hat
                  └───┘          └───┘        EB           └───┘

        g_a / g_s: four stride-2 5×5 (transposed) convolutions with GDN / IGDN
        EB: EntropyBottleneck (learned factorized density, rANS coded)

    Args:
        N: channels of the hidden layers.
        M: channels of the latent y.
        in_channels: image channels (1 for grayscale medical images).
    """

    residual = False

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1):
        super().__init__()
        self.config = {"N": int(N), "M": int(M), "in_channels": int(in_channels)}
        self.entropy_bottleneck = EntropyBottleneck(M)
        self.g_a = analysis_transform(in_channels, N, M, residual=self.residual)
        self.g_s = synthesis_transform(in_channels, N, M, residual=self.residual)

    @property
    def downsampling_factor(self) -> int:
        return 2**4

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """Decoder: everything after entropy decoding. Only reads ``y_hat``."""
        return self.g_s(y_hat)

    def forward(self, x: Tensor) -> dict[str, Any]:
        y = self.g_a(x)
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        return {"x_hat": self.synthesize(y_hat), "likelihoods": {"y": y_likelihoods}}

    def analyze(self, x: Tensor) -> list[Tensor]:
        """The latents the encoder codes for ``x``: ``[y]``."""
        return [self.g_a(x)]

    def compress(self, x: Tensor) -> dict[str, Any]:
        return self.compress_latents(self.analyze(x))

    def compress_latents(self, latents: list[Tensor]) -> dict[str, Any]:
        """Entropy-code ``[y]`` (from :meth:`analyze`, or refined by :mod:`medvae.refine`)."""
        (y,) = latents
        y_strings = self.entropy_bottleneck.compress(y)
        return {"strings": [y_strings], "shape": tuple(y.size()[-2:])}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> dict[str, Tensor]:
        y_hat = self.entropy_bottleneck.decompress(strings[0], shape)
        return {"x_hat": self.synthesize(y_hat)}


@register_model("bls-residual")
class BLSResidual(BLS2017):
    r"""``bls2017`` with residual skip paths: residual blocks in g_a/g_s and a latent fusion.

    .. code-block:: none

                  ┌────────┐   y   ┌───┐ y_hat        y_hat ┌──────┐ y_f ┌────────┐
            x ──►─┤g_a + RB├──►───►┤ Q ├──►───·⋯⋯·───►──┬──►┤  +   ├──►──┤g_s + RB├──► x_hat
                  └────────┘       └───┘      EB        │   └──┬───┘     └────────┘
                                                        └─►[f]─┘   (decoder-side fusion)

        RB: residual block (two 3×3 convs, identity shortcut) at 1/4 and 1/8 resolution
        f:  3×3 conv, LeakyReLU, 1×1 conv; y_f = y_hat + f(y_hat)

    The fusion reads only ``y_hat``, which the decoder gets from the bitstream.
    """

    residual = True

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1):
        super().__init__(N=N, M=M, in_channels=in_channels)
        self.fusion = LatentFusion(M)

    def synthesize(self, y_hat: Tensor) -> Tensor:
        return self.g_s(self.fusion(y_hat))
