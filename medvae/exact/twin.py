"""A model's coding path in exact arithmetic: what both the encoder and every decoder run.

:class:`ExactTwin` holds the exact twins of a model's transforms under the same
attribute names (``g_a``, ``h_a``, ``h_s``, ``scale_head``, ``fusion``, ``g_s``) and
runs the family's own data-flow methods (``analyze``, ``hyper_decode``,
``scales_from``, ``synthesize``) on them, so the data flow is written once, in the
model class, and the twin cannot drift from it.

Entropy coding uses the model's CompressAI entropy models with the integer CDF
tables stored in the weights. For hyperprior models the table index of each
element of y is an exact comparison of the exact scale with the stored scale
table; for the factorized prior it is the channel. Nothing on the decoding side is
computed in machine-dependent floating point.
"""

from __future__ import annotations

import math

import torch
from compressai.entropy_models import EntropyModel
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae.errors import BitstreamError
from medvae.exact.calibrate import INPUT, Plan
from medvae.exact.fixed import DTYPE, Fixed, from_real
from medvae.exact.layers import Tiled, convert, resolution_scale

def guarded(string: bytes, n_symbols: int) -> bytes:
    """``string`` followed by enough zero bytes that CompressAI's rANS decoder cannot read past it.

    That decoder reads without bounds checks: 8 bytes to start, then at most one 32-bit word
    per renormalization, which happens at most once per symbol and once per 4-bit group of
    an escaped value's length or bits. In zero padding a refill brings eight zero nibbles,
    so a length run of 15s ends within 17 groups (the 64-bit state holds 16 nibbles), an
    escape then has at most 255 bit groups, and a symbol reads at most 35 words, while the
    string itself can lengthen one escape by at most 15 groups per nibble it holds. Hence
    ``8 + 4·(35·n + 4·len + 40)`` zero bytes suffice: a short, empty or forged string
    decodes to garbage, which the pixel checksum refuses, instead of crashing the process.
    """
    return string + bytes(8 + 4 * (35 * n_symbols + 4 * len(string) + 40))


#: Transforms a family may have; each present one gets an exact twin.
TRANSFORMS = ("g_a", "h_a", "h_s", "scale_head", "fusion", "g_s")
#: The image-sized transforms run in tiles (:class:`~medvae.exact.layers.Tiled`): TILE latent
#: pixels a side (512 image pixels) with HALO latent pixels (128 image pixels) of context,
#: wider than their receptive fields, so tiled coding equals whole-image coding bit for bit.
TILED = ("g_a", "g_s")
TILE, HALO = 32, 8


class ExactTwin(nn.Module):
    """The exact coding path of ``model`` under calibration ``plan`` (see :mod:`medvae.exact`)."""

    def __init__(self, model: CompressionModel, plan: Plan):
        super().__init__()
        self.family = type(model)
        for name in TRANSFORMS:
            if hasattr(model, name):
                twin = convert(getattr(model, name), name, plan)
                if name in TILED:
                    scale = resolution_scale(getattr(model, name))
                    in_pixels = 1 if scale > 1 else round(1 / scale)  # input pixels per latent pixel
                    twin = Tiled(twin, scale, TILE * in_pixels, HALO * in_pixels)
                setattr(self, name, twin)
        self.hyperprior = hasattr(model, "gaussian_conditional")
        # Kept outside the module tree: their tables stay on the CPU, where rANS runs.
        self._coders = (model.entropy_bottleneck, getattr(model, "gaussian_conditional", None))
        self.input_frac = plan[INPUT]
        self.bottleneck_frac = plan["entropy_bottleneck"]
        bottleneck = model.entropy_bottleneck
        cdf, lengths = bottleneck._quantized_cdf.cpu(), bottleneck._cdf_length.cpu()
        peaks = [int(torch.diff(cdf[c, : int(lengths[c])]).max()) for c in range(cdf.shape[0])]
        #: The fewest bits a latent position can cost in the bottleneck string (all channels).
        self.bits_per_position = sum(-math.log2(p / 2**bottleneck.entropy_coder_precision) for p in peaks)
        self.register_buffer("medians", bottleneck.quantiles.detach()[:, 0, 1].to("cpu", DTYPE).reshape(1, -1, 1, 1))
        if self.hyperprior:
            conditional = model.gaussian_conditional
            self.conditional_frac = plan["gaussian_conditional"]
            self.register_buffer("scale_table", conditional.scale_table.detach().to("cpu", DTYPE)[:-1].contiguous())
            self.scale_bound = float(conditional.lower_bound_scale.bound)

    @property
    def device(self) -> torch.device:
        return self.medians.device

    def check_lengths(self, strings: list[bytes], shape: tuple[int, int]) -> None:
        """Refuse, before any allocation, a bottleneck string too short for ``shape`` latent positions.

        Every symbol of channel ``c`` costs at least ``-log2(p_max(c))`` bits, ``p_max`` its
        table's largest probability, and rANS cannot write fewer bits than its symbols cost
        (less its 64-bit state and a margin). A file that claims a large image in a few
        bytes is therefore forged or damaged, and is refused at once.
        """
        needed = 0.99 * self.bits_per_position * shape[0] * shape[1] - 128
        if 8 * len(strings[-1]) < needed:
            raise BitstreamError(
                f"corrupted bitstream: {len(strings[-1])} bytes cannot hold the {shape[0]} x {shape[1]} latent "
                f"the header claims (at least {needed / 8:.0f} bytes)"
            )

    # --- transforms ---------------------------------------------------------------
    def analyze(self, x: Tensor) -> list[Tensor]:
        """Latents (real values, float64) of an image ``x`` in [0, 1], (1, 1, H, W), padded to the stride."""
        latents = self.family.analyze(self, from_real(x.to(self.device), self.input_frac))
        return [latent.real() for latent in latents]

    def _bottleneck_symbols(self, v: Tensor) -> Tensor:
        """What the entropy bottleneck codes for ``v``: ``round(v − median)``."""
        return torch.round(v.to(self.device, DTYPE) - self.medians)

    def _bottleneck_value(self, symbols: Tensor) -> Fixed:
        """What a decoder makes of bottleneck symbols: ``symbols + median``."""
        return from_real(symbols.to(self.device) + self.medians, self.bottleneck_frac)

    def _indexes(self, scales: Fixed) -> Tensor:
        """Table index of each scale: how many table entries lie below it (exact comparisons)."""
        bounded = scales.real().clamp(min=self.scale_bound)
        return torch.searchsorted(self.scale_table, bounded.contiguous(), right=False).to(torch.int32)

    # --- coding -------------------------------------------------------------------
    def encode(self, latents: list[Tensor]) -> tuple[list[bytes], Fixed]:
        """Entropy-code real-valued latents ``[y]`` or ``[y, z]`` (batch 1); also return the
        reconstruction every decoder will compute from the strings."""
        bottleneck, conditional = self._coders
        if not self.hyperprior:
            symbols = self._bottleneck_symbols(latents[0])
            (string,) = EntropyModel.compress(bottleneck, symbols.cpu(), bottleneck._build_indexes(symbols.size()))
            return [string], self.family.synthesize(self, self._bottleneck_value(symbols))
        y, z = latents
        z_symbols = self._bottleneck_symbols(z)
        (z_string,) = EntropyModel.compress(bottleneck, z_symbols.cpu(), bottleneck._build_indexes(z_symbols.size()))
        features = self.family.hyper_decode(self, self._bottleneck_value(z_symbols))
        indexes = self._indexes(self.family.scales_from(self, features))
        y_symbols = torch.round(y.to(self.device, DTYPE))
        (y_string,) = conditional.compress(y_symbols.cpu(), indexes.cpu())
        y_hat = from_real(y_symbols, self.conditional_frac)
        return [y_string, z_string], self.family.synthesize(self, y_hat, features)

    def decode(self, strings: list[bytes], shape: tuple[int, int]) -> Fixed:
        """The reconstruction from the strings ``encode`` wrote; ``shape``: the latent coded by the
        entropy bottleneck (y for the factorized prior, z for hyperpriors)."""
        bottleneck, conditional = self._coders
        size = (1, bottleneck._quantized_cdf.size(0), *shape)
        indexes = bottleneck._build_indexes(size)
        symbols = EntropyModel.decompress(bottleneck, [guarded(strings[-1], indexes.numel())], indexes, DTYPE)
        hat = self._bottleneck_value(symbols)
        if not self.hyperprior:
            return self.family.synthesize(self, hat)
        features = self.family.hyper_decode(self, hat)
        indexes = self._indexes(self.family.scales_from(self, features))
        y_symbols = conditional.decompress([guarded(strings[0], indexes.numel())], indexes.cpu(), DTYPE)
        return self.family.synthesize(self, from_real(y_symbols.to(self.device), self.conditional_frac), features)
