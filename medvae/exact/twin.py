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
from medvae.exact.image import NormalizedImage
from medvae.exact.layers import Local, Tiled, TiledOutput, convert, resolution_scale

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


#: Format 3 codes each latent in bands of whole rows, all channels, at most CHUNK symbols a
#: band (one row when a row alone holds more): the guard a decoder appends to one string stays
#: under 37 MB for any image up to 4096 latent columns wide (55 MB), where one string for a
#: 4096×4096 slice needed 0.9 GB; and since a band holds every channel of its rows, a decoder
#: can decode and use a latent band by band, from the table indexes of those rows alone.
CHUNK = 2**18


def band_rows(shape: tuple[int, ...], chunk: int | None) -> int:
    """Latent rows per string for a (…, C, H, W) latent (``chunk`` None: all, as in format 2)."""
    c, h, w = shape[-3:]
    return max(h, 1) if chunk is None else max(1, chunk // max(c * w, 1))


def band_count(shape: tuple[int, ...], chunk: int | None) -> int:
    """Strings a (…, C, H, W) latent is coded in."""
    rows = band_rows(shape, chunk)
    return max(1, -(-shape[-2] // rows))


def _tables(coder: EntropyModel) -> tuple[list, list, list]:
    return coder._quantized_cdf.tolist(), coder._cdf_length.reshape(-1).int().tolist(), coder._offset.reshape(-1).int().tolist()


def encode_symbols(coder: EntropyModel, symbols: Tensor, indexes: Tensor, chunk: int = CHUNK) -> list[bytes]:
    """rANS strings of integer ``symbols`` (1, C, H, W) with table ``indexes`` (same shape), one
    per band of rows, each in (C, rows, W) order: what CompressAI's ``EntropyModel.compress``
    writes for that part. A latent of at most ``chunk`` symbols is one string, as in format 2."""
    symbols, indexes = symbols.int().cpu(), indexes.int().cpu()
    rows, tables = band_rows(symbols.shape, chunk), _tables(coder)
    return [
        coder.entropy_coder.encode_with_indexes(
            symbols[0, :, r : r + rows].reshape(-1).tolist(), indexes[0, :, r : r + rows].reshape(-1).tolist(), *tables
        )
        for r in range(0, max(1, symbols.shape[-2]), rows)
    ]


def decode_symbols(coder: EntropyModel, strings: list[bytes], indexes: Tensor, chunk: int | None = CHUNK) -> Tensor:
    """The symbols :func:`encode_symbols` coded (float64, the shape of ``indexes``); each string
    is decoded from a :func:`guarded` copy, so a forged one cannot crash the decoder."""
    indexes = indexes.int().cpu()
    if len(strings) != band_count(indexes.shape, chunk):
        raise BitstreamError(f"corrupted bitstream: {len(strings)} strings for a latent of shape {tuple(indexes.shape[1:])}")
    out = torch.empty(indexes.shape, dtype=DTYPE)
    rows, tables = band_rows(indexes.shape, chunk), _tables(coder)
    for r, string in zip(range(0, indexes.shape[-2], rows), strings):
        part = indexes[0, :, r : r + rows]
        values = coder.entropy_coder.decode_with_indexes(guarded(string, part.numel()), part.reshape(-1).tolist(), *tables)
        out[0, :, r : r + rows] = torch.tensor(values, dtype=DTYPE).reshape(part.shape)
    return out


#: Transforms a family may have; each present one gets an exact twin.
TRANSFORMS = ("g_a", "h_a", "h_s", "scale_head", "fusion", "g_s")
#: The image-sized transforms run in tiles (:class:`~medvae.exact.layers.Tiled`), in latent
#: pixels: (tile, halo). Their halos are wider than the receptive fields (a latent pixel of
#: g_a sees 54 image pixels to each side, under 4 latent pixels; an output pixel of g_s,
#: fusion included, sees 5 latent pixels; ``tests/exact/test_exact.py`` measures both for every
#: family), so tiled coding equals whole-image coding bit for bit. Tiles of 384 + 2·64 and
#: 384 + 2·96 image pixels keep memory flat at about 2.25× the work of whole-image coding.
#: The synthesis output is lazy: :func:`medvae.exact.image.pixels` reads it tile by tile.
TILING = {"g_a": (24, 4), "g_s": (24, 6)}
#: Halo of the fusion (3×3 then 1×1 convolutions), which runs inside the synthesis tiles
#: (:class:`~medvae.exact.layers.Local`); the tests measure it too.
FUSION_HALO = 1


class ExactTwin(nn.Module):
    """The exact coding path of ``model`` under calibration ``plan`` (see :mod:`medvae.exact`)."""

    def __init__(self, model: CompressionModel, plan: Plan):
        super().__init__()
        self.family = type(model)
        for name in TRANSFORMS:
            if hasattr(model, name):
                twin = convert(getattr(model, name), name, plan)
                if name in TILING:
                    scale = resolution_scale(getattr(model, name))
                    in_pixels = 1 if scale > 1 else round(1 / scale)  # input pixels per latent pixel
                    tile, halo = TILING[name]
                    twin = Tiled(twin, scale, tile * in_pixels, halo * in_pixels, lazy=name == "g_s")
                elif name == "fusion":
                    twin = Local(twin, FUSION_HALO)
                setattr(self, name, twin)
        self.hyperprior = hasattr(model, "gaussian_conditional")
        #: Symbols per string in format 3 (:data:`CHUNK`; tests lower it to get many strings).
        self.chunk = CHUNK
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
            #: Channels of y: what the hyper-analysis reads.
            self.y_channels = next(m for m in model.h_a.modules() if isinstance(m, nn.Conv2d)).in_channels
            conditional = model.gaussian_conditional
            self.conditional_frac = plan["gaussian_conditional"]
            self.register_buffer("scale_table", conditional.scale_table.detach().to("cpu", DTYPE)[:-1].contiguous())
            self.scale_bound = float(conditional.lower_bound_scale.bound)

    @property
    def device(self) -> torch.device:
        return self.medians.device

    def check_lengths(self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK) -> None:
        """Refuse, before any allocation, a bottleneck string too short for ``shape`` latent positions.

        Every symbol of channel ``c`` costs at least ``-log2(p_max(c))`` bits, ``p_max`` its
        table's largest probability, and rANS cannot write fewer bits than its symbols cost
        (less its 64-bit state and a margin). A file that claims a large image in a few
        bytes is therefore forged or damaged, and is refused at once.
        """
        strings = self._split(strings, shape, chunk)[-1]
        needed = 0.99 * self.bits_per_position * shape[0] * shape[1] - 128 * len(strings)
        have = sum(len(s) for s in strings)
        if 8 * have < needed:
            raise BitstreamError(
                f"corrupted bitstream: {have} bytes cannot hold the {shape[0]} x {shape[1]} latent "
                f"the header claims (at least {needed / 8:.0f} bytes)"
            )

    def _split(self, strings: list[bytes], shape: tuple[int, int], chunk: int | None) -> list[list[bytes]]:
        """The strings of each coded latent: ``[y]`` for the factorized prior, ``[y, z]`` for
        hyperpriors (``shape``: the bottleneck's latent, y's is 4× larger a side)."""
        bottleneck = self._coders[0]
        counts = [band_count((bottleneck._quantized_cdf.size(0), *shape), chunk)]
        if self.hyperprior:  # y is 4× z a side
            counts.insert(0, band_count((self.y_channels, 4 * shape[0], 4 * shape[1]), chunk))
        if len(strings) != sum(counts):
            raise BitstreamError(f"corrupted bitstream: {len(strings)} strings where this latent needs {sum(counts)}")
        return [strings[: counts[0]], strings[counts[0] :]] if self.hyperprior else [strings]

    # --- transforms ---------------------------------------------------------------
    def analyze(self, x: NormalizedImage | Tensor) -> list[Tensor]:
        """Latents (real values, float64) of an image in [0, 1], padded to the stride: a
        :class:`NormalizedImage` (read tile by tile) or a (1, 1, H, W) tensor."""
        if isinstance(x, NormalizedImage):
            x = x.as_fixed(self.input_frac, self.device)
        else:
            x = from_real(x.to(self.device), self.input_frac)
        latents = self.family.analyze(self, x)
        return [latent.real() for latent in latents]

    def _bottleneck_symbols(self, v: Tensor) -> Tensor:
        """What the entropy bottleneck codes for ``v``: ``round(v − median)``."""
        return torch.round(v.to(self.device, DTYPE) - self.medians)

    def _bottleneck_value(self, symbols: Tensor) -> Fixed:
        """What a decoder makes of bottleneck symbols: ``symbols + median``."""
        return from_real(symbols.to(self.device) + self.medians, self.bottleneck_frac)

    def _indexes(self, scales: Fixed) -> Tensor:
        """Table index of each scale: how many table entries lie below it (exact comparisons)."""
        bounded = scales.real().clamp_(min=self.scale_bound)  # real() is a new tensor: clamp it in place
        return torch.searchsorted(self.scale_table, bounded.contiguous(), right=False, out_int32=True)

    # --- coding -------------------------------------------------------------------
    def encode(self, latents: list[Tensor]) -> tuple[list[bytes], TiledOutput]:
        """Entropy-code real-valued latents ``[y]`` or ``[y, z]`` (batch 1) in format-3 strings;
        also return the reconstruction every decoder will compute from the strings. y is
        rounded in place (it is large and not needed afterwards)."""
        bottleneck, conditional = self._coders
        if not self.hyperprior:
            symbols = self._bottleneck_symbols(latents[0])
            strings = encode_symbols(bottleneck, symbols, bottleneck._build_indexes(symbols.size()), self.chunk)
            return strings, self.family.synthesize(self, self._bottleneck_value(symbols))
        y, z = latents
        z_symbols = self._bottleneck_symbols(z)
        z_strings = encode_symbols(bottleneck, z_symbols, bottleneck._build_indexes(z_symbols.size()), self.chunk)
        features = self.family.hyper_decode(self, self._bottleneck_value(z_symbols))
        indexes = self._indexes(self.family.scales_from(self, features))
        y_symbols = y.to(self.device, DTYPE).round_()  # in place: y is not needed any more
        y_strings = encode_symbols(conditional, y_symbols, indexes, self.chunk)
        y_hat = from_real(y_symbols, self.conditional_frac)
        return y_strings + z_strings, self.family.synthesize(self, y_hat, features)

    def decode(self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK) -> TiledOutput:
        """The reconstruction from the strings ``encode`` wrote (computed when read); ``shape``:
        the latent coded by the entropy bottleneck (y for the factorized prior, z for
        hyperpriors); ``chunk``: symbols per string (None: format 2, one string per latent)."""
        bottleneck, conditional = self._coders
        groups = self._split(strings, shape, chunk)
        indexes = bottleneck._build_indexes((1, bottleneck._quantized_cdf.size(0), *shape))
        hat = self._bottleneck_value(decode_symbols(bottleneck, groups[-1], indexes, chunk))
        if not self.hyperprior:
            return self.family.synthesize(self, hat)
        features = self.family.hyper_decode(self, hat)
        indexes = self._indexes(self.family.scales_from(self, features))
        y_symbols = decode_symbols(conditional, groups[0], indexes, chunk)
        return self.family.synthesize(self, from_real(y_symbols.to(self.device), self.conditional_frac), features)
