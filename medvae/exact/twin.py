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
from typing import Callable

import torch
from compressai.entropy_models import EntropyModel
from compressai.models import CompressionModel
from torch import Tensor, nn

from medvae import prediction
from medvae.errors import BitstreamError
from medvae.exact.calibrate import INPUT, Plan
from medvae.exact.fixed import DTYPE, Fixed, Stored, from_real, map_rows_, pow2, scale_round
from medvae.exact.image import NormalizedImage
from medvae.exact.layers import Local, LocalOutput, Tiled, TiledOutput, convert, resolution_scale
from medvae.prediction import UNIT_STEP


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


#: Table indexes of latent rows ``r0:r1``, all channels and columns: ``(1, C, r1 − r0, W)``.
IndexRows = Callable[[int, int], Tensor]


def encode_symbols(coder: EntropyModel, symbols: Tensor, indexes: IndexRows, chunk: int = CHUNK) -> list[bytes]:
    """rANS strings of integer ``symbols`` (1, C, H, W), one per band of rows, each in
    (C, rows, W) order: what CompressAI's ``EntropyModel.compress`` writes for that part.
    ``indexes(r0, r1)`` gives the bands' table indexes, so they never exist whole. A latent
    of at most ``chunk`` symbols is one string, as in format 2."""
    rows, tables = band_rows(symbols.shape, chunk), _tables(coder)
    return [
        coder.entropy_coder.encode_with_indexes(
            symbols[0, :, r : r + rows].reshape(-1).tolist(),
            indexes(r, min(r + rows, symbols.shape[-2])).reshape(-1).tolist(),
            *tables,
        )
        for r in range(0, max(1, symbols.shape[-2]), rows)
    ]


def decode_symbols(
    coder: EntropyModel, strings: list[bytes], indexes: IndexRows, shape: tuple[int, ...], chunk: int | None = CHUNK
) -> Tensor:
    """The symbols :func:`encode_symbols` coded, as int32 of ``shape`` (1, C, H, W) on the CPU;
    each string is decoded from a :func:`guarded` copy, so a forged one cannot crash the decoder."""
    if len(strings) != band_count(shape, chunk):
        raise BitstreamError(f"corrupted bitstream: {len(strings)} strings for a latent of shape {tuple(shape[1:])}")
    out = torch.empty(shape, dtype=torch.int32)
    rows, tables = band_rows(shape, chunk), _tables(coder)
    for r, string in zip(range(0, shape[-2], rows), strings):
        part = out[0, :, r : r + rows]
        band = indexes(r, r + part.shape[-2]).reshape(-1).tolist()
        values = coder.entropy_coder.decode_with_indexes(guarded(string, len(band)), band, *tables)
        part.copy_(torch.tensor(values, dtype=torch.int32).reshape(part.shape))
    return out


def _constant_indexes(shape: tuple[int, ...], index: int) -> IndexRows:
    """Table indexes of a latent of ``shape`` (1, C, H, W) coded with one table, ``index``."""
    return lambda r0, r1: torch.full((1, shape[1], r1 - r0, shape[-1]), index, dtype=torch.int32)


def channel_indexes(channels: int, width: int) -> IndexRows:
    """Table indexes of a factorized entropy model: each element's channel."""
    return lambda r0, r1: torch.arange(channels, dtype=torch.int32)[None, :, None, None].expand(1, channels, r1 - r0, width)


#: Transforms a family may have; each present one gets an exact twin.
TRANSFORMS = ("g_a", "gain", "h_a", "h_s", "scale_head", "context_model", "fusion", "inverse_gain", "g_s")
#: The transforms that read image-sized or latent-sized inputs run in tiles
#: (:class:`~medvae.exact.layers.Tiled`): (tile, halo, output), tile and halo in pixels of
#: their coarser side (latent pixels for g_a/g_s, z pixels for h_a). The halos are wider
#: than the receptive fields (a latent pixel of g_a sees 54 image pixels to each side,
#: under 4 latent pixels; a z pixel of h_a sees under 3 z pixels of y; an output pixel of
#: g_s, fusion included, sees 5 latent pixels; ``tests/exact/test_exact.py`` measures all of
#: them for every family), so tiled coding equals whole-image coding bit for bit. g_a keeps
#: y as int32, h_a's z is small, and the synthesis output is read tile by tile by
#: :func:`medvae.exact.image.pixels`.
TILING = {"g_a": (24, 4, "stored"), "h_a": (32, 3, "fixed"), "g_s": (24, 6, "lazy")}
#: Halos of the layers read band by band of rows (:class:`~medvae.exact.layers.Local`), in
#: their input pixels: the fusion (3×3 then 1×1 convolutions) and the hyper-synthesis (z to
#: y, ×4), which the entropy coder and the synthesis tiles read; the tests measure both.
FUSION_HALO = 1
HYPER_HALO = 3
#: Halo of the checkerboard context (a 5×5 convolution), read band by band by the entropy coder.
CONTEXT_HALO = 2
#: Latent rows of scales computed at once for the entropy coder (about 2^21 values a band).
INDEX_BAND_VALUES = 2**21


class ExactTwin(nn.Module):
    """The exact coding path of ``model`` under calibration ``plan`` (see :mod:`medvae.exact`)."""

    #: Passes over y, each coded in its own bands of strings (2 for a checkerboard context).
    y_passes = 1

    def __init__(self, model: CompressionModel, plan: Plan):
        super().__init__()
        self.family = type(model)
        for name in TRANSFORMS:
            if hasattr(model, name):
                twin = convert(getattr(model, name), name, plan)
                scale = resolution_scale(getattr(model, name))
                if name in TILING:
                    in_pixels = 1 if scale > 1 else round(1 / scale)  # input pixels per coarse pixel
                    tile, halo, output = TILING[name]
                    twin = Tiled(twin, scale, tile * in_pixels, halo * in_pixels, output)
                elif name == "fusion":
                    twin = Local(twin, FUSION_HALO)
                elif name == "context_model":
                    twin = Local(twin, CONTEXT_HALO)
                elif name == "h_s":
                    twin = Local(twin, HYPER_HALO, round(scale), whole_rows=True)
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
            counts.insert(0, self.y_passes * band_count((self.y_channels, 4 * shape[0], 4 * shape[1]), chunk))
        if len(strings) != sum(counts):
            raise BitstreamError(f"corrupted bitstream: {len(strings)} strings where this latent needs {sum(counts)}")
        return [strings[: counts[0]], strings[counts[0] :]] if self.hyperprior else [strings]

    # --- transforms ---------------------------------------------------------------
    def analyze(self, x: NormalizedImage | Tensor) -> list[Stored | Tensor]:
        """Latents of an image in [0, 1], padded to the stride (a :class:`NormalizedImage`, read
        tile by tile, or a (1, 1, H, W) tensor): y as :class:`Stored` (int32), z as real values."""
        if isinstance(x, NormalizedImage):
            x = x.as_fixed(self.input_frac, self.device)
        else:
            x = from_real(x.to(self.device), self.input_frac)
        return self._real(self.family.analyze(self, x))

    def transform(self, x: NormalizedImage) -> Stored:
        """A variable-rate model's analysis transform ``g_a(x)`` (the same at every quality), which
        :meth:`latents_from` turns into the latents of the quality set."""
        return self.g_a(x.as_fixed(self.input_frac, self.device))

    def latents_from(self, transformed: Stored) -> list[Stored | Tensor]:
        """:meth:`analyze`'s latents from :meth:`transform`'s output (which stays unchanged: the
        gain writes a copy), equal to those :meth:`analyze` gives for the same image."""
        return self._real(self.family.analyze_transformed(self, transformed))

    @staticmethod
    def _real(latents: list) -> list[Stored | Tensor]:
        return [latent if isinstance(latent, Stored) else latent.real() for latent in latents]

    def _symbols(self, latent: Stored | Tensor, offset: Tensor | None = None, step: int = UNIT_STEP) -> Tensor:
        """What an entropy model codes for a latent: ``round(v − offset)`` (int32), or for y
        quantized with another ``step`` (in quarters, :mod:`medvae.prediction`), ``round(v / step)``.
        A :class:`Stored` latent is replaced by its symbols, band by band, in its own memory."""
        if step != UNIT_STEP:
            return self._stepped_symbols(latent, step)
        shift = 0.0 if offset is None else offset
        if isinstance(latent, Stored):
            unit = pow2(-latent.frac)
            return map_rows_(latent.values, lambda v: torch.round(v * unit - shift))
        return torch.round(latent.to(self.device, DTYPE) - shift).to(torch.int32)

    def _stepped_symbols(self, latent: Stored | Tensor, step: int) -> Tensor:
        """y's symbols at a ``step`` of ``step``/4: ``round(y · 4 / step)``, halves rounded up. For
        the exact analysis' y (``v · 2^-f``), in integers: ``floor((8v + d) / 2d)`` with ``d = step · 2^f``,
        an exact floor division on every device (a float division by a scalar is not: a GPU
        multiplies by its reciprocal, which can move a half). Real values (a refined y, which only
        the encoder sees) are divided in float64."""
        if not isinstance(latent, Stored):
            return torch.floor(latent.to(self.device, DTYPE) * UNIT_STEP / step + 0.5).to(torch.int32)
        d = step << latent.frac
        return map_rows_(latent.values, lambda v: torch.div(v * (2 * UNIT_STEP) + d, 2 * d, rounding_mode="floor"), torch.int64)

    def _values(self, symbols: Tensor, frac: int, offset: Tensor | None = None, step: int = UNIT_STEP) -> Stored:
        """What a decoder makes of symbols: ``symbols + offset`` (or ``symbols · step``, in
        quarters) at ``frac`` fractional bits, in the symbols' own memory (exact products)."""
        unit, shift = pow2(frac) * step / UNIT_STEP, 0.0 if offset is None else offset
        return Stored(map_rows_(symbols.to(self.device), lambda v: scale_round(v + shift, unit)), frac)

    def _bottleneck_value(self, symbols: Tensor) -> Stored:
        """The entropy bottleneck's latent from its symbols: ``symbols + median``."""
        return self._values(symbols, self.bottleneck_frac, self.medians)

    def _indexes(self, scales: Fixed, step: int = UNIT_STEP) -> Tensor:
        """Table index of each scale of y's symbols at ``step`` (in quarters; their scale is
        σ · 4 / step): how many table entries t lie below it, by exact comparisons of 4σ (exact)
        with t · step (one IEEE product, rounded alike on every device; at the unit step both
        sides are exact, and the comparisons are those of σ with t)."""
        bounded = scales.real().mul_(UNIT_STEP).clamp_(min=self.scale_bound * UNIT_STEP)  # real() is a new tensor
        return torch.searchsorted(self.scale_table * step, bounded.contiguous(), right=False, out_int32=True).cpu()

    def _scale_indexes(self, features: LocalOutput, shape: tuple[int, ...], step: int = UNIT_STEP) -> IndexRows:
        """Table indexes of y's rows (quantized with ``step``) from the hyper-decoder's features,
        computed a band of :data:`INDEX_BAND_VALUES` at a time as the entropy coder asks for rows in order."""
        _, c, h, w = shape
        rows_per_band = max(1, INDEX_BAND_VALUES // (c * w))
        band: list = [0, 0, None]  # rows [first, last) and their indexes

        def rows(r0: int, r1: int) -> Tensor:
            if not (band[0] <= r0 and r1 <= band[1]):
                last = min(h, max(r1, r0 + rows_per_band))
                scales = self.family.scales_from(self, features.crop(r0, last, 0, w))
                band[:] = [r0, last, self._indexes(scales, step)]
            return band[2][:, :, r0 - band[0] : r1 - band[0]]

        return rows

    # --- coding -------------------------------------------------------------------
    def _bottleneck_strings(self, symbols: Tensor) -> list[bytes]:
        """The entropy bottleneck's strings of its latent's ``symbols`` (table index: the channel)."""
        return encode_symbols(self._coders[0], symbols, channel_indexes(symbols.shape[1], symbols.shape[-1]), self.chunk)

    def _bottleneck_symbols(self, strings: list[bytes], shape: tuple[int, int], chunk: int | None) -> Tensor:
        """The symbols :meth:`_bottleneck_strings` coded, for a latent of ``shape`` positions."""
        bottleneck = self._coders[0]
        full = (1, bottleneck._quantized_cdf.size(0), *shape)
        return decode_symbols(bottleneck, strings, channel_indexes(full[1], full[-1]), full, chunk)

    def encode(self, latents: list[Stored | Tensor], step: int = UNIT_STEP) -> tuple[list[bytes], TiledOutput]:
        """Entropy-code the latents ``[y]`` or ``[y, z]`` (batch 1: :meth:`analyze`'s, or real
        values) in format-3 strings; also return the reconstruction every decoder will compute
        from the strings. The list is emptied and a :class:`Stored` y becomes its own symbols
        (it is large and not needed afterwards). ``step``: y's quantization step, in quarters
        (hyperprior models; another than the unit is what a predicted series slice's y has, and
        only :meth:`encode_predicted` records it: here, for its reconstruction)."""
        if not self.hyperprior:
            if step != UNIT_STEP:
                raise ValueError("a quantization step other than the unit is for hyperprior models")
            symbols = self._symbols(latents.pop(0), self.medians)
            return self._bottleneck_strings(symbols), self.family.synthesize(self, self._bottleneck_value(symbols))
        strings, x_hat, _ = self._encode_hyperprior(latents, step=step)
        return strings, x_hat

    def predicted_symbols(self, x: NormalizedImage, step: int = UNIT_STEP) -> tuple[Tensor, Tensor]:
        """The prediction of :mod:`medvae.prediction` from an image (the previous slice of a
        series as decoded, normalised as this slice is): the y of its analysis quantized with
        ``step`` (in quarters), and its z, rounded as the coder rounds z, as int32 symbols."""
        y, z = self.analyze(x)
        return self._symbols(y, step=step), self._symbols(z, self.medians)

    def encode_predicted(
        self, latents: list[Stored | Tensor], predicted: tuple[Tensor, Tensor], step: int = UNIT_STEP
    ) -> tuple[list[bytes], TiledOutput, bytes]:
        """:meth:`encode` with y quantized with ``step`` (in quarters) and y and z coded against
        ``predicted`` (:meth:`predicted_symbols` at that step) where :func:`medvae.prediction.choose`
        and :func:`~medvae.prediction.choose_hyper` find it pays; also returns the prediction block
        (empty where nothing gains at the unit step: the strings are then :meth:`encode`'s). The
        reconstruction is that of y itself, as without prediction. Hyperprior models, one pass over y."""
        if not self.hyperprior or self.y_passes != 1:
            raise ValueError("base prediction is for hyperprior models coded in one pass over y")
        return self._encode_hyperprior(latents, predicted, step)

    def _encode_hyperprior(
        self, latents: list[Stored | Tensor], predicted: tuple[Tensor, Tensor] | None = None, step: int = UNIT_STEP
    ) -> tuple[list[bytes], TiledOutput, bytes]:
        """:meth:`encode` (and, with ``predicted``, :meth:`encode_predicted`) of ``[y, z]``."""
        conditional = self._coders[1]
        y, z = latents
        latents.clear()
        z_symbols = self._symbols(z, self.medians)
        hyper = None
        if predicted is not None:
            z_symbols, z_predicted = z_symbols.cpu(), predicted[1].cpu()
            hyper = prediction.choose_hyper(z_symbols, z_predicted, self._coders[0], conditional)
        if hyper is None:
            z_strings = self._bottleneck_strings(z_symbols)
        else:
            z_strings = encode_symbols(conditional, z_symbols - z_predicted, _constant_indexes(z_symbols.shape, hyper), self.chunk)
        features = self.family.hyper_decode(self, self._bottleneck_value(z_symbols))
        y_symbols = self._symbols(y, step=step)
        del y
        coded, rows, block = y_symbols, self._scale_indexes(features, y_symbols.shape, step), b""
        if predicted is not None:
            y_symbols, y_predicted = y_symbols.cpu(), predicted[0].cpu()  # the entropy coder's side
            if y_predicted.shape != y_symbols.shape:
                raise ValueError(f"a prediction of shape {tuple(y_predicted.shape)} for a latent of shape {tuple(y_symbols.shape)}")
            indexes = rows(0, y_symbols.shape[-2])
            options = prediction.choose(y_symbols, y_predicted, indexes, conditional)
            if options.any() or step != UNIT_STEP or hyper is not None:  # else nothing gains: coded as without prediction, no block
                block = prediction.pack(options, step, hyper)
                coded = prediction.coded(y_symbols, y_predicted, options, indexes)
                rows = lambda r0, r1: prediction.indexes_for(indexes[:, :, r0:r1], options)  # noqa: E731
        y_strings = encode_symbols(conditional, coded, rows, self.chunk)
        y_values = self._values(y_symbols, self.conditional_frac, step=step)
        return y_strings + z_strings, self.family.synthesize(self, y_values, features), block

    def decode(
        self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK,
        predicted: prediction.Prediction | None = None, step: int = UNIT_STEP,
    ) -> TiledOutput:
        """The reconstruction from the strings ``encode`` wrote (computed when read); ``shape``:
        the latent coded by the entropy bottleneck (y for the factorized prior, z for
        hyperpriors); ``chunk``: symbols per string (None: format 2, one string per latent);
        ``predicted``: for :meth:`encode_predicted`'s strings, the prediction and its block's
        options and z's table (:func:`medvae.prediction.read`); ``step``: y's quantization step, in quarters
        (the block's, or the header's for a slice coded alone)."""
        conditional = self._coders[1]
        groups = self._split(strings, shape, chunk)
        if predicted is not None and predicted.hyper is not None:
            if predicted.hyper >= conditional._quantized_cdf.size(0):
                raise BitstreamError(f"corrupted base prediction block: z's table {predicted.hyper} does not exist")
            z_predicted = predicted.z.cpu()
            if tuple(z_predicted.shape[-2:]) != tuple(shape):
                raise BitstreamError(f"a base prediction of shape {tuple(z_predicted.shape)} for a hyper-latent of shape {tuple(shape)}")
            z_symbols = decode_symbols(conditional, groups[-1], _constant_indexes(z_predicted.shape, predicted.hyper), tuple(z_predicted.shape), chunk)
            hat = self._bottleneck_value(z_symbols + z_predicted)
        else:
            hat = self._bottleneck_value(self._bottleneck_symbols(groups[-1], shape, chunk))
        if not self.hyperprior:
            return self.family.synthesize(self, hat)
        features = self.family.hyper_decode(self, hat)
        y_shape = (1, self.y_channels, 4 * shape[0], 4 * shape[1])
        rows = self._scale_indexes(features, y_shape, step)
        if predicted is None:
            y_symbols = decode_symbols(conditional, groups[0], rows, y_shape, chunk)
        else:
            values, options = predicted.y.cpu(), predicted.options
            if tuple(values.shape) != y_shape:
                raise BitstreamError(f"a base prediction of shape {tuple(values.shape)} for a latent of shape {y_shape}")
            indexes = rows(0, y_shape[-2])
            shifted = lambda r0, r1: prediction.indexes_for(indexes[:, :, r0:r1], options)  # noqa: E731
            y_symbols = prediction.restored(decode_symbols(conditional, groups[0], shifted, y_shape, chunk), values, options, indexes)
        return self.family.synthesize(self, self._values(y_symbols, self.conditional_frac, step=step), features)
