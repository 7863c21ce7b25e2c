"""Exact twins of the layers MedVAE's models are built from, and the converter that builds them.

Each twin computes what its float layer computes, in the fixed-point arithmetic of
:mod:`medvae.exact.fixed`: convolutions as float64 matrix products of integers, over an
explicit im2col (``unfold``) or one kernel tap at a time (never a library convolution,
which may pick Winograd or FFT and round), transposed convolutions as the product followed by ``fold`` (col2im,
a sum of integers), and elementwise steps from exactly rounded IEEE operations only.
Output fractional bits come from a calibration plan (:mod:`medvae.exact.calibrate`):
``plan[name]`` for the layer named ``name`` in the float model.

Work is split into bands of output rows so that memory stays bounded; every output
value is the same exact sum whatever the split, so banding changes nothing.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterator
from typing import Callable

import torch
import torch.nn.functional as F
from compressai.layers import GDN, ResidualBlock
from torch import Tensor, nn

from medvae.exact.fixed import (
    ACTIVATION_BITS, DTYPE, Fixed, Stored, integer_bias, integer_weights, map_rows_, pow2, saturate, scale_round_, weight_shifts,
)
from medvae.models.gain import QUALITY_UNITS, GainUnit, mix, mix_position
from medvae.models.context import CheckerboardContext, MeanScaleHead
from medvae.models.hyperprior import _HyperSynthesisWithSkip
from medvae.models.layers import LatentFusion

#: Elements of one im2col band (float64): 2^20 × 8 bytes = 8 MiB.
BAND_ELEMENTS = 2**20
#: Elements of one GDN band: 2^18 × 8 bytes = 2 MiB, so its five temporaries stay in cache (a
#: 64-channel GDN at 256² took 53 ms in bands of 2^18 elements, 64–69 ms in bands of 2^20, 72 ms in 2^16).
GDN_BAND_ELEMENTS = 2**18
#: Outputs plus inputs (float64) of one chunk of a convolution by taps: 2^18 × 8 bytes = 2 MiB,
#: about what two cores' caches hold, so the nine taps re-read the chunk from cache, not memory.
TAP_CHUNK_ELEMENTS = 2**18
#: Strided layers with fewer input channels, and transposed ones with fewer output channels,
#: than this (an image's first and last layers) use im2col or col2im; the others kernel taps, whose
#: outputs are laid out channels last but for fewer output channels than this (channels first).
FEW_CHANNELS = 8
#: LeakyReLU slopes are applied as ``round(x · m / 2^20)``, m an integer.
SLOPE_BITS = 20

Plan = dict[str, int]


class ExactModule(nn.Module):
    """A layer on :class:`Fixed` values. Buffers are float64 integers (moved with ``.to(device)``)."""

    def forward(self, x: Fixed) -> Fixed:  # pragma: no cover - interface
        raise NotImplementedError


class _Accumulating(ExactModule):
    """A layer that sums integer weights × inputs into an accumulator, adds a bias, and rescales.

    The accumulator of output channel ``o`` has scale ``2^(s_o + frac_in)``. Its weight
    shift ``s_o`` is the largest the sum bound allows (:func:`weight_shifts`) and that keeps
    the bias, at the same scale, below 2^51; the second limit only binds for inputs with
    very many fractional bits (tiny values), where the weights need fewer bits anyway.
    """

    def __init__(self, weight_by_output: Tensor, bias: Tensor | None, out_frac: int):
        super().__init__()
        self.register_buffer("weight", weight_by_output.detach().to("cpu", DTYPE))
        self.register_buffer("bias", torch.zeros(self.weight.shape[0], dtype=DTYPE) if bias is None else bias.detach().to("cpu", DTYPE))
        self.max_shifts = weight_shifts(self.weight)
        # |b| < 2^bias_bits, so b · 2^(s_o + frac_in) < 2^51 whenever s_o + frac_in <= 51 - bias_bits.
        self.bias_bits = torch.tensor([math.frexp(b)[1] for b in self.bias.tolist()], dtype=torch.int64)
        self.out_frac = int(out_frac)
        self._cache: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def integers(self, frac_in: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For inputs with ``frac_in`` fractional bits: integer weights, integer bias (shaped to
        broadcast), the power of two back to ``out_frac``, and the accumulator exponents."""
        if frac_in not in self._cache:
            shifts = torch.minimum(self.max_shifts, 51 - self.bias_bits - frac_in)
            device = self.weight.device
            weights = integer_weights(self.weight.cpu(), shifts).to(device)
            exponents = shifts + frac_in
            bias = integer_bias(self.bias.cpu(), exponents).to(device)[:, None, None]
            multiplier = pow2(self.out_frac - exponents).to(device)[:, None, None]
            self._cache[frac_in] = (weights, bias, multiplier, exponents)
        return self._cache[frac_in]

    def _apply(self, fn, recurse=True):  # moving devices invalidates the cached integers
        self._cache = {}
        return super()._apply(fn, recurse)


def _rows_per_band(per_row: int, elements: int | None = None) -> int:
    return max(1, (BAND_ELEMENTS if elements is None else elements) // max(per_row, 1))


class ExactConv2d(_Accumulating):
    """``nn.Conv2d`` (groups 1, dilation 1) as integer matrix products (:func:`conv2d_exact`)."""

    def __init__(self, conv: nn.Conv2d, out_frac: int, weight: Tensor | None = None):
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError(f"exact conversion supports plain convolutions, not {conv}")
        super().__init__(conv.weight if weight is None else weight, conv.bias, out_frac)
        self.stride, self.padding, self.kernel = conv.stride, conv.padding, conv.kernel_size

    def forward(self, x: Fixed, activation: ExactLeakyReLU | None = None) -> Fixed:
        """The layer's output; with ``activation``, that activation of it, applied to each chunk of
        outputs as soon as it is summed, while it is in cache (the same values as applying it after)."""
        weights, bias, multiplier, _ = self.integers(x.frac)
        bias, multiplier = bias.view(-1, 1), multiplier.view(-1, 1)  # per channel, for (batch, channel, n) chunks

        def finish(chunk: Tensor) -> None:
            scale_round_(chunk.add_(bias), multiplier)
            if activation is not None:
                activation.apply_(chunk)

        return Fixed(conv2d_exact(x.value, weights, self.stride, self.padding, finish), self.out_frac)


#: What :func:`conv2d_exact` applies, in place, to each ``(batch, channel, n)`` chunk of summed outputs.
Epilogue = Callable[[Tensor], None]


def conv2d_exact(
    value: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int], epilogue: Epilogue | None = None,
) -> Tensor:
    """Integer convolution: every output is one exact float64 sum of integer products.

    It accumulates one kernel tap at a time (a 1×1 product over a shifted view of the input,
    added in place, :func:`_accumulate_taps`); a strided convolution first splits its padded
    input into its stride phases, each of which meets its own taps with stride 1. A strided layer
    with fewer than :data:`FEW_CHANNELS` input channels (an image's first layer) makes its
    products too thin for taps, and uses im2col (:func:`_conv2d_im2col`) instead, as do strided
    layers on a GPU (the path measured there before; see docs/exact.md). Every partial
    sum, in any order, is an integer below 2^53 (:mod:`medvae.exact.fixed`), so the value is
    the same whatever the order, the BLAS, the threads or the device. ``epilogue`` (elementwise)
    then gives each output the same value whichever chunk it is applied in.
    """
    (sh, sw), (kh, kw) = stride, weight.shape[2:]
    b, c, h, w = value.shape
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and tuple(padding) == (0, 0):  # a 1×1 convolution: one product, channels last
        out = value.permute(0, 2, 3, 1).reshape(b, h * w, c) @ weight.reshape(weight.shape[0], -1).t()  # no copy of a channels-last input
        if epilogue is not None:
            epilogue(out.transpose(1, 2))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)
    if (sh, sw) != (1, 1) and (c < FEW_CHANNELS or value.is_cuda):
        return _finished(_conv2d_im2col(value, weight, stride, padding), epilogue)
    out_h, out_w = (h + 2 * padding[0] - kh) // sh + 1, (w + 2 * padding[1] - kw) // sw + 1
    # Phase (a, e) of the padded input, x[a::sh, e::sw], meets the taps weight[a::sh, e::sw]. Every
    # phase is laid out at the same height and width: one extra row, so that the last tap's
    # shifted view stays inside the buffer (see _accumulate_taps), and the columns past out_w
    # are computed and discarded. Channels last: a tap's product reads whole rows of the buffer.
    rows, cols = out_h + -(-kh // sh), out_w + -(-kw // sw) - 1
    used = min(h, rows * sh - padding[0]), min(w, cols * sw - padding[1])
    padded = _padded_channels_last(value, (rows * sh, cols * sw), (padding[0], padding[1]), used)
    few = weight.shape[0] < FEW_CHANNELS  # a few outputs (a network's last layer): channels first, the faster product then
    out = value.new_empty((b, weight.shape[0], out_h * cols) if few else (b, out_h * cols, weight.shape[0]))
    matrices, taps = _tap_matrices(weight, channels_first=few), []
    for a in range(min(sh, kh)):
        for e in range(min(sw, kw)):
            flat = padded[:, a::sh, e::sw].reshape(b, -1, c)  # one copy per phase (none for stride 1)
            taps += [(flat, m * cols + n, matrices[a + m * sh, e + n * sw]) for m in range(-(-(kh - a) // sh))
                     for n in range(-(-(kw - e) // sw))]
    _accumulate_taps(out, taps, epilogue, channels_first=few)
    if few:
        return out.view(b, -1, out_h, cols)[..., :out_w]
    return out.view(b, out_h, cols, -1)[:, :, :out_w].permute(0, 3, 1, 2)  # a view, channels last in memory


def _padded_channels_last(value: Tensor, size: tuple[int, int], offset: tuple[int, int], used: tuple[int, int]) -> Tensor:
    """A (batch, height, width, channels) buffer of ``size`` holding ``value``'s first ``used``
    rows and columns at ``offset`` and zeros around them: the padded input :func:`_accumulate_taps`
    reads (only the padding is zeroed, not the whole buffer)."""
    (top, left), (used_h, used_w) = offset, used
    padded = value.new_empty((value.shape[0], *size, value.shape[1]))
    padded[:, top : top + used_h, left : left + used_w] = value[:, :, :used_h, :used_w].permute(0, 2, 3, 1)
    padded[:, :top] = 0
    padded[:, top + used_h :] = 0
    padded[:, :, :left] = 0
    padded[:, :, left + used_w :] = 0
    return padded


def _finished(out: Tensor, epilogue: Epilogue | None) -> Tensor:
    """``out`` (channels last in memory, as :func:`_conv2d_im2col` lays it out) after ``epilogue``,
    applied to it as one ``(batch, channel, n)`` view."""
    if epilogue is not None:
        b, o = out.shape[:2]
        epilogue(out.permute(0, 2, 3, 1).reshape(b, -1, o).transpose(1, 2))
    return out


def _conv2d_im2col(value: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """:func:`conv2d_exact` as one matrix product over im2col columns, in bands of output rows
    (so memory stays bounded): faster than taps for a strided layer with few input channels.
    The output is laid out channels last (each product the transposed columns times the small
    weight matrix), as the layers after it read it without a copy."""
    (sh, sw), (kh, kw) = stride, weight.shape[2:]
    b, c, h, w = value.shape
    o = weight.shape[0]
    matrix = weight.reshape(o, -1).t()  # (c·kh·kw, out)
    out_h, out_w = (h + 2 * padding[0] - kh) // sh + 1, (w + 2 * padding[1] - kw) // sw + 1
    rows = _rows_per_band(b * c * kh * kw * out_w)
    if rows >= out_h:  # one band: unfold pads by itself
        cols = F.unfold(value, (kh, kw), padding=padding, stride=(sh, sw))
        return (cols.transpose(1, 2) @ matrix).view(b, out_h, out_w, o).permute(0, 3, 1, 2)
    x = F.pad(value, (padding[1], padding[1], padding[0], padding[0]))
    out = value.new_empty((b, out_h, out_w, o))
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        band = x[:, :, r0 * sh : (r1 - 1) * sh + kh]
        cols = F.unfold(band, (kh, kw), stride=(sh, sw))  # (b, c·kh·kw, rows·out_w), copies only
        out[:, r0:r1] = (cols.transpose(1, 2) @ matrix).view(b, r1 - r0, out_w, o)
    return out.permute(0, 3, 1, 2)


def _tap_matrices(weight: Tensor, channels_first: bool = False) -> Tensor:
    """A (out, in, kh, kw) weight as (kh, kw, in, out), each tap's matrix contiguous as
    :func:`_accumulate_taps` multiplies by it ((kh, kw, out, in) for ``channels_first``): a tap's
    slice of the weight is strided in both dimensions, which the BLAS would copy at every product."""
    return weight.permute(2, 3, 0, 1).contiguous() if channels_first else weight.permute(2, 3, 1, 0).contiguous()


def _accumulate_taps(
    out: Tensor, taps: list[tuple[Tensor, int, Tensor]], epilogue: Epilogue | None = None, channels_first: bool = False,
) -> Tensor:
    """``out[:, i] = Σ flat[:, i + shift] @ matrix`` over ``taps`` of (flat input, shift,
    (in, out) matrix, :func:`_tap_matrices`), channels last: ``out`` is (batch, positions, out channels), each ``flat``
    (batch, positions, in channels). A convolution as a sum over kernel taps of 1×1 products,
    each over a shifted run of whole rows of the input that needs no copy: 2–3× faster than
    im2col for the layers here, and channels last (each product a tall matrix times a small
    one) 1.3–2× faster again than channels first for 24 to 96 channels on these cores. With
    ``channels_first``, ``out`` is (batch, out channels, positions), each product the small
    (out, in) matrix times the transposed run: twice as fast for 2 output channels (a network's last
    layer). On a CPU the outputs are taken in chunks (:data:`TAP_CHUNK_ELEMENTS`), so that all
    taps read a chunk from cache, and ``epilogue`` finishes each chunk, as a ``(1, channel, n)``
    view, while it is still there. Each output is the same exact sum either way. ``out``'s prior
    contents are ignored (the first tap's product is written over them)."""
    b, o, length = out.shape if channels_first else (out.shape[0], out.shape[2], out.shape[1])
    c = taps[0][0].shape[2]
    step = length if out.is_cuda else max(256, TAP_CHUNK_ELEMENTS // (o + c))  # a GPU wants few, large products
    for i in range(b):
        for start in range(0, length, step):
            stop = min(length, start + step)
            chunk = out[i, :, start:stop] if channels_first else out[i, start:stop]
            for t, (flat, shift, matrix) in enumerate(taps):
                run = flat[i, start + shift : stop + shift]
                product = (matrix, run.t()) if channels_first else (run, matrix)
                if t == 0:
                    torch.mm(*product, out=chunk)
                else:
                    chunk.addmm_(*product)
            if epilogue is not None:
                epilogue(chunk.unsqueeze(0) if channels_first else chunk.t().unsqueeze(0))
    return out


class ExactConvTranspose2d(_Accumulating):
    """``nn.ConvTranspose2d`` as an integer matrix product and ``fold`` (col2im: a sum of integers)."""

    def __init__(self, conv: nn.ConvTranspose2d, out_frac: int):
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError(f"exact conversion supports plain transposed convolutions, not {conv}")
        super().__init__(conv.weight.transpose(0, 1), conv.bias, out_frac)  # (out, in, kh, kw)
        self.stride, self.padding, self.output_padding = conv.stride, conv.padding, conv.output_padding

    def forward(self, x: Fixed) -> Fixed:
        weights, bias, multiplier, _ = self.integers(x.frac)
        bias, multiplier = bias.view(-1, 1), multiplier.view(-1, 1)  # per channel, for (batch, channel, n) chunks
        finish = lambda chunk: scale_round_(chunk.add_(bias), multiplier)  # noqa: E731
        return Fixed(conv_transpose2d_exact(x.value, weights, self.stride, self.padding, self.output_padding, finish), self.out_frac)


def conv_transpose2d_exact(
    value: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int],
    epilogue: Epilogue | None = None,
) -> Tensor:
    """Integer transposed convolution; ``weight`` is (out, in, kh, kw).

    Output phase (a, e) of the full result (before ``padding`` is cropped), rows ``a::sh`` and
    columns ``e::sw``, is a stride-1 correlation of the input with the taps ``weight[a::sh, e::sw]``
    reversed: full[sh·u + a] = Σ_m w[a + sh·m] · x[u − m]. Each phase is computed by
    :func:`_accumulate_taps` (exact integer sums) and written into its place; no position gets
    two phases, so the result is the same exact sum as col2im's. Layers with fewer than
    :data:`FEW_CHANNELS` output channels (an image's last layer), and every layer on a GPU, use
    col2im (:func:`_conv_transpose2d_fold`), faster there. ``epilogue`` (elementwise) finishes
    each phase's chunks in cache as :func:`conv2d_exact`'s does (or the whole result, where a
    kernel smaller than the stride leaves positions that no phase writes, and after col2im).
    """
    (sh, sw), (kh, kw) = stride, weight.shape[2:]
    b, c, h, w = value.shape
    o = weight.shape[0]
    if o < FEW_CHANNELS or value.is_cuda:
        return _conv_transpose2d_fold(value, weight, stride, padding, output_padding, epilogue)
    out_h = (h - 1) * sh - 2 * padding[0] + kh + output_padding[0]
    out_w = (w - 1) * sw - 2 * padding[1] + kw + output_padding[1]
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)
    # Phase rows u = 0 .. rows − 1 cover the full result up to padding + out_h; the input is
    # padded by taps − 1 before (x[u − m] for m < taps) and laid out with one extra row after.
    rows, cols = -(-(padding[0] + out_h) // sh), -(-(padding[1] + out_w) // sw)
    width = cols + taps_w - 1
    padded = _padded_channels_last(value, (rows + taps_h, width), (taps_h - 1, taps_w - 1), (min(h, rows), min(w, cols)))
    flat = padded.reshape(b, -1, c)
    # Every phase has a tap when the kernel is at least the stride, and then writes every position.
    every = kh >= sh and kw >= sw
    full = (value.new_empty if every else value.new_zeros)((b, rows * sh, cols * sw, o))
    matrices = _tap_matrices(weight)
    for a in range(min(sh, kh)):
        for e in range(min(sw, kw)):
            phase_h, phase_w = -(-(kh - a) // sh), -(-(kw - e) // sw)
            # x[u − m] for m = phase_h − 1 − m' sits at padded row u + m' + taps_h − phase_h
            taps = [(flat, (i + taps_h - phase_h) * width + j + taps_w - phase_w,
                     matrices[a + (phase_h - 1 - i) * sh, e + (phase_w - 1 - j) * sw])
                    for i in range(phase_h) for j in range(phase_w)]
            phase = _accumulate_taps(value.new_empty((b, rows * width, o)), taps, epilogue if every else None)
            full[:, a::sh, e::sw] = phase.view(b, rows, width, o)[:, :, :cols]
    if epilogue is not None and not every:  # the positions no phase reaches hold zero sums, finished too
        epilogue(full.view(b, -1, o).transpose(1, 2))
    return full[:, padding[0] : padding[0] + out_h, padding[1] : padding[1] + out_w].permute(0, 3, 1, 2)  # a view: no second copy


def _conv_transpose2d_fold(
    value: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int], output_padding: tuple[int, int],
    epilogue: Epilogue | None = None,
) -> Tensor:
    """:func:`conv_transpose2d_exact` as a matrix product followed by ``fold`` (col2im, a sum of
    integers), in bands of input rows: faster than taps for layers with few channels."""
    (sh, sw), (kh, kw) = stride, weight.shape[2:]
    b, c, h, w = value.shape
    o = weight.shape[0]
    out_h = (h - 1) * sh - 2 * padding[0] + kh + output_padding[0]
    out_w = (w - 1) * sw - 2 * padding[1] + kw + output_padding[1]
    full_h, full_w = (h - 1) * sh + kh, (w - 1) * sw + kw
    # Rows and columns past the full result (output padding) receive no contribution.
    full = value.new_zeros((b, o, max(full_h, padding[0] + out_h), max(full_w, padding[1] + out_w)))
    matrix = weight.permute(0, 2, 3, 1).reshape(o * kh * kw, c)  # rows in (out, kh, kw) order, as fold reads them
    rows = _rows_per_band(b * o * kh * kw * w)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        band = value[:, :, r0:r1]
        if band.stride(1) == 1:  # channels last in memory: the product reads the band transposed, no copy
            cols = matrix @ band.permute(0, 2, 3, 1).reshape(b, -1, c).transpose(1, 2)  # (b, o·kh·kw, rows·w)
        else:
            cols = matrix @ band.reshape(b, c, -1)
        band_h = (r1 - r0 - 1) * sh + kh
        full[:, :, r0 * sh : r0 * sh + band_h, :full_w] += F.fold(cols, (band_h, full_w), (kh, kw), stride=(sh, sw))
    if epilogue is not None:
        epilogue(full.view(b, o, -1))
    return full[:, :, padding[0] : padding[0] + out_h, padding[1] : padding[1] + out_w]  # a view: no second copy


class ExactGDN(ExactModule):
    """GDN / inverse GDN: ``x / sqrt(β + Σ γ x²)`` or ``x · sqrt(...)``.

    ``x²`` is exact (below 2^48) and is split into two 24-bit halves, so ``Σ γ x²`` is two
    exact integer 1×1 convolutions, joined by one correctly rounded addition; ``β`` is
    added, and ``sqrt``, the product (or quotient) and the final rounding follow, each a
    single IEEE 754 operation with one correct result on every CPU and GPU. No precision
    of ``x²`` is given up, however small ``x`` is next to the largest value.
    """

    def __init__(self, gdn: GDN, out_frac: int):
        super().__init__()
        gamma = _nonnegative(gdn.gamma, gdn.gamma_reparam)[:, :, None, None]  # (out, in, 1, 1)
        self.inverse = bool(gdn.inverse)
        self.out_frac = int(out_frac)
        self.shifts = weight_shifts(gamma)
        self.register_buffer("gamma", integer_weights(gamma, self.shifts))
        self.register_buffer("beta", _nonnegative(gdn.beta, gdn.beta_reparam))

    def forward(self, x: Fixed, in_place: bool = False) -> Fixed:
        # Elementwise across positions: computed in bands of rows, so its temporaries stay
        # small, with the same value per element whatever the banding. A band is read whole
        # before its output is written, so ``in_place`` (for an input nobody else holds) is exact too.
        out = x.value if in_place else torch.empty_like(x.value)
        b, c, h, w = x.value.shape
        rows = _rows_per_band(b * c * w, GDN_BAND_ELEMENTS)
        beta, multiplier = self._constants(x.frac, x.value.device)
        for r0 in range(0, h, rows):
            self._band(x.value[:, :, r0 : r0 + rows], beta, multiplier, out[:, :, r0 : r0 + rows])
        return Fixed(out, self.out_frac)

    def _constants(self, frac: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per channel, for inputs with ``frac`` fractional bits: β at the sum's scale, and the
        power of two the sum is multiplied by before its square root (see :meth:`_band`)."""
        # The sum is v · 2^exponent, exponent = s_o + 2·frac, and the input x · 2^frac. The output
        # x / sqrt(v) at out_frac bits is the input over sqrt(sum · 2^(−exponent − 2·(out_frac − frac))),
        # and x · sqrt(v) the input times sqrt(sum · 2^(2·(out_frac − frac) − exponent)).
        exponents = self.shifts + 2 * frac
        scale = 2 * (self.out_frac - frac)
        beta = (self.beta.cpu() * pow2(exponents)).to(device)[:, None, None]
        multiplier = pow2(scale - exponents if self.inverse else -scale - exponents).to(device)[:, None, None]
        return beta, multiplier

    def _band(self, value: Tensor, beta: Tensor, multiplier: Tensor, out: Tensor) -> None:
        """One band's output, written to ``out`` (which may be ``value`` itself).

        Exact up to the IEEE operations named: ``x²`` split in two 24-bit halves makes two exact
        integer sums, joined by one correctly rounded addition; β's addition, the product by a power
        of two (exact), the square root and the quotient (or product) are each correctly rounded,
        and the final rounding to an integer is exact. Scaling a square root's argument by 4^j scales
        its correctly rounded result by exactly 2^j, and so for a quotient or product: folding the
        output's power of two into the root's argument gives the very values of scaling after."""
        sq = value * value  # exact: |x| < 2^24
        high = sq.mul(pow2(-ACTIVATION_BITS)).floor_()  # exact: an integer < 2^24
        low = sq.add_(high, alpha=-pow2(ACTIVATION_BITS))  # exact (the true value, 0 <= low < 2^24, is representable)
        acc = conv2d_exact(high, self.gamma, (1, 1), (0, 0)).mul_(pow2(ACTIVATION_BITS))
        acc.add_(conv2d_exact(low, self.gamma, (1, 1), (0, 0)))
        root = acc.add_(beta).mul_(multiplier).sqrt_()
        if self.inverse:
            torch.mul(value, root, out=out)
        else:
            torch.div(value, root, out=out)
        saturate(out.round_())


def _nonnegative(parameter: Tensor, reparam: nn.Module) -> Tensor:
    """CompressAI's ``NonNegativeParametrizer`` in float64: ``max(p, bound)² − pedestal`` (exact here)."""
    p = parameter.detach().to("cpu", DTYPE)
    bounded = torch.maximum(p, reparam.lower_bound.bound.detach().to("cpu", DTYPE))
    return bounded * bounded - reparam.pedestal.detach().to("cpu", DTYPE)


class ExactReLU(ExactModule):
    def forward(self, x: Fixed) -> Fixed:
        return Fixed(x.value.clamp(min=0.0), x.frac)


class ExactLeakyReLU(ExactModule):
    """Negative values times an integer slope ``m / 2^20``, rounded half to even."""

    def __init__(self, slope: float):
        super().__init__()
        # m · 2^-20 is exact in float64, and so is x · m (< 2^38): one multiply gives x · m / 2^20 exactly.
        self.slope = round(slope * 2**SLOPE_BITS) * pow2(-SLOPE_BITS)

    def forward(self, x: Fixed) -> Fixed:
        return Fixed(self.apply_(x.value.clone()), x.frac)

    def apply_(self, value: Tensor) -> Tensor:
        """The activation of ``value`` (integers), in place."""
        # x · slope for x < 0 is exact (above), so rounding after the library's LeakyReLU gives
        # round(x · slope) there and leaves the integers x ≥ 0 as they are: two passes, no temporary.
        return F.leaky_relu_(value, self.slope).round_()


def geometric_mix(low: Tensor, high: Tensor, k: int) -> Tensor:
    """``M / 256`` per channel, ``M`` the integer nearest ``256 · low^((256 − k)/256) · high^(k/256)``
    for positive integer vectors ``low``, ``high`` (the exact twin's gain mix).

    Exactness: ``decimal`` computes ``ln`` and ``exp`` correctly rounded (round-half-even) at
    the context's precision, and its products and quotients likewise, in software (libmpdec),
    so ``M`` is a function of the integers and ``k`` alone, never of a platform's ``libm``.
    With 40 digits the result is accurate to about 10^-30 relative, far below the 0.5 that
    rounding to ``M`` can feel except on exact ties, which the same arithmetic breaks the same
    way everywhere. For ``k`` in [0, 256] ``M`` lies between ``256·low`` and ``256·high``, so
    the bounds of the linear mix (an integer below 2^29, exact in float64) hold for it too;
    below the first level (``k`` negative, extrapolated) they are checked, and a vector
    outside them is refused, on every machine alike.
    """
    fraction = decimal.Decimal(k) / QUALITY_UNITS
    with decimal.localcontext(decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)):
        logs = [((1 - fraction) * decimal.Decimal(int(a)).ln() + fraction * decimal.Decimal(int(b)).ln())
                for a, b in zip(low.tolist(), high.tolist())]
        values = [int((log.exp() * QUALITY_UNITS).to_integral_value(decimal.ROUND_HALF_EVEN)) for log in logs]
    if not all(0 < v < 2**29 for v in values):
        raise ValueError(f"the gains extrapolated to {k}/256 of a level have no exact form")
    return torch.tensor(values, dtype=DTYPE, device=low.device) / QUALITY_UNITS


class ExactGain(ExactModule):
    """Per-channel scaling by a gain unit's vector at a quality (:mod:`medvae.models.gain`).

    Exactness: the gains are integers ``G = round(g · 2^GAIN_BITS)`` below 2^21 and the
    quality's mix is ``M / 256`` with ``M`` an integer below 2^29, exact in float64: the
    geometric mix of :func:`geometric_mix`, or for format-5 files (:attr:`geometric` False)
    the linear ``M = (256 − k)·G_i + k·G_{i+1}``. Its product with an activation (below
    2^24) is an integer below 2^53 times 2^-8, exact too; scaling it by a power of two is
    exact and the one rounding to ``out_frac`` is IEEE round-half-even. The vector is
    therefore a function of the weights and the file's quality alone.
    """

    GAIN_BITS = 14

    def __init__(self, gains: Tensor, out_frac: int, units: int):
        super().__init__()
        g = gains.detach().to("cpu", DTYPE)
        if not bool(((g > 0) & (g < 2 ** (20 - self.GAIN_BITS + 1))).all()):
            raise ValueError("gains must lie in (0, 128) to have an exact form")
        self.register_buffer("integers", torch.round(g * pow2(self.GAIN_BITS)))
        self.out_frac = int(out_frac)
        #: The quality in 1/256 (:data:`medvae.models.gain.QUALITY_UNITS`); the coder sets it.
        self.units = int(units)
        #: Mix geometrically between levels (False: linearly, as format-5 files did).
        self.geometric = True
        self._mixes: dict[tuple[int, str], Tensor] = {}  # geometric mixes by (units, device type)

    def vector(self) -> Tensor:
        """The gains at :attr:`units`, in units of ``2^-GAIN_BITS`` (exact: integers over 256)."""
        i, k = mix_position(self.units)
        if k == 0 or not self.geometric:
            return mix(self.integers, self.units, geometric=False)
        key = (self.units, self.integers.device.type)
        if key not in self._mixes:
            self._mixes[key] = geometric_mix(self.integers[i].cpu(), self.integers[i + 1].cpu(), k).to(self.integers.device)
        return self._mixes[key]

    def forward(self, x: Fixed | Stored) -> Fixed | Stored:
        mixed, unit = self.vector()[None, :, None, None], pow2(self.out_frac - x.frac - self.GAIN_BITS)
        if isinstance(x, Stored):
            values = map_rows_(x.values.clone(), lambda v: saturate(torch.round(v * mixed * unit)))
            return Stored(values, self.out_frac)
        return Fixed(saturate(torch.round(x.value * mixed * unit)), self.out_frac)


class ExactUpsample(ExactModule):
    """Nearest-neighbour upsampling by an integer factor (copies)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = int(factor)

    def forward(self, x: Fixed) -> Fixed:
        v = x.value.repeat_interleave(self.factor, dim=2).repeat_interleave(self.factor, dim=3)
        return Fixed(v, x.frac)


class ExactSequential(ExactModule):
    """Layers in order. A GDN after the first layer overwrites its input, which only the
    layer before it made and nothing else holds (one image-sized tensor less per GDN)."""

    def __init__(self, layers: list[ExactModule]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Fixed) -> Fixed:
        layers = list(self.layers)
        i = 0
        while i < len(layers):
            layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, ExactConv2d) and isinstance(after, ExactLeakyReLU):
                x, i = layer(x, activation=after), i + 2  # the activation fused into the convolution
                continue
            x = layer(x, in_place=True) if i and isinstance(layer, ExactGDN) else layer(x)
            i += 1
        return x


def add(a: Fixed, b: Fixed, frac: int) -> Fixed:
    """``a + b`` at ``frac`` fractional bits (each operand rescaled exactly, then one sum)."""
    return Fixed(saturate(a.to(frac).value + b.to(frac).value), frac)


def concat(parts: list[Fixed], frac: int) -> Fixed:
    """Channel concatenation at a common ``frac``."""
    return Fixed(torch.cat([p.to(frac).value for p in parts], dim=1), frac)


class ExactResidualBlock(ExactModule):
    """CompressAI's ``ResidualBlock``: ``leaky(conv2(leaky(conv1(x)))) + skip(x)``."""

    def __init__(self, conv1: ExactConv2d, conv2: ExactConv2d, leaky: ExactLeakyReLU, skip: ExactModule | None, out_frac: int):
        super().__init__()
        self.conv1, self.conv2, self.leaky, self.skip = conv1, conv2, leaky, skip
        self.out_frac = int(out_frac)

    def forward(self, x: Fixed) -> Fixed:
        out = self.conv2(self.conv1(x, activation=self.leaky), activation=self.leaky)  # each activation fused into its convolution
        return add(out, x if self.skip is None else self.skip(x), self.out_frac)


class ExactLatentFusion(ExactModule):
    """``ŷ + f([ŷ, side])`` (:class:`medvae.models.layers.LatentFusion`)."""

    def __init__(self, body: ExactModule, in_frac: int, out_frac: int):
        super().__init__()
        self.body, self.in_frac, self.out_frac = body, int(in_frac), int(out_frac)

    def forward(self, y_hat: Fixed, side: Fixed | None = None) -> Fixed:
        inputs = y_hat if side is None else concat([y_hat, side], self.in_frac)
        return add(y_hat, self.body(inputs), self.out_frac)


class ExactMeanScaleHead(ExactModule):
    """Scales and means of y (:class:`medvae.models.context.MeanScaleHead`):
    ``ReLU(scale(F) + Δ)`` and ``means``, where ``(Δ, means) = context([F, ctx])``."""

    def __init__(self, scale: ExactModule, context: ExactModule, context_channels: int, in_frac: int, out_frac: int):
        super().__init__()
        self.scale, self.context, self.context_channels = scale, context, int(context_channels)
        self.in_frac, self.out_frac = int(in_frac), int(out_frac)

    def forward(self, features: Fixed, context: Fixed | None = None) -> tuple[Fixed, Fixed]:
        if context is None:  # the anchors: a context of zeros
            b, _, h, w = features.shape
            context = Fixed(features.value.new_zeros((b, self.context_channels, h, w)), self.in_frac)
        out = self.context(concat([features, context], self.in_frac))
        m = out.shape[1] // 2
        delta, means = Fixed(out.value[:, :m], out.frac), Fixed(out.value[:, m:], out.frac)
        scales = add(self.scale(features), delta, self.out_frac)
        return Fixed(scales.value.clamp_(min=0.0), self.out_frac), means


def _mean_scale_head(module: nn.Module, name: str, plan: Plan) -> ExactMeanScaleHead:
    context_channels = module.context[0].in_channels - module.M
    return ExactMeanScaleHead(
        _child(module, name, "scale", plan), _child(module, name, "context", plan), context_channels,
        plan[f"{name}.context:in"], plan[name],
    )


class ExactSum(ExactModule):
    """``first(x) + second(x)`` (the medvae hyper-decoder's trunk and skip)."""

    def __init__(self, first: ExactModule, second: ExactModule, out_frac: int):
        super().__init__()
        self.first, self.second, self.out_frac = first, second, int(out_frac)

    def forward(self, x: Fixed) -> Fixed:
        return add(self.first(x), self.second(x), self.out_frac)


class Tiled(ExactModule):
    """Runs ``inner`` on overlapping tiles of its input and stitches the outputs.

    ``inner`` maps an input of size ``n`` to ``n · scale`` (``scale`` 16 for a synthesis
    transform, 1/16 for an analysis one). Each tile of ``tile`` input pixels is computed
    with ``halo`` more pixels of real input on every side (fewer at the image border,
    where the whole-image computation pads too) and only its own part of the output is
    kept. Every output value depends on the input within the transform's receptive field
    only, and the arithmetic is exact, so when ``halo`` covers that field the result is
    identical, bit for bit, to the whole-image computation (the tests check it), while
    memory stays that of one tile.

    The input is anything with a ``shape`` and a ``crop(r0, r1, c0, c1)`` giving that
    region as :class:`Fixed` (a :class:`Fixed`, a :class:`Stored` latent, or an image
    normalized tile by tile). ``output`` says what the result is: ``"fixed"``, one
    :class:`Fixed`; ``"stored"``, one :class:`Stored` (int32, for latent-sized results);
    ``"lazy"``, a :class:`TiledOutput` that computes its tiles when read, so an image-sized
    output never has to exist whole.
    """

    OUTPUTS = ("fixed", "stored", "lazy")

    def __init__(self, inner: ExactModule, scale: float, tile: int, halo: int, output: str = "fixed"):
        super().__init__()
        if output not in self.OUTPUTS:
            raise ValueError(f"output must be one of {self.OUTPUTS}, not {output!r}")
        self.inner, self.scale, self.tile, self.halo, self.output = inner, scale, int(tile), int(halo), output

    def tiles(self, x) -> Iterator[tuple[tuple[int, int, int, int], Fixed]]:
        """``((r0, r1, c0, c1), part)``: each tile's output region and its output values."""
        h, w = x.shape[-2:]
        s = self.scale
        if h <= self.tile + 2 * self.halo and w <= self.tile + 2 * self.halo:
            yield (0, int(h * s), 0, int(w * s)), self.inner(x.crop(0, h, 0, w))
            return
        for r0 in range(0, h, self.tile):
            for c0 in range(0, w, self.tile):
                r1, c1 = min(h, r0 + self.tile), min(w, c0 + self.tile)
                a0, b0 = max(0, r0 - self.halo), max(0, c0 - self.halo)
                a1, b1 = min(h, r1 + self.halo), min(w, c1 + self.halo)
                part = self.inner(x.crop(a0, a1, b0, b1))
                own = part.crop(int((r0 - a0) * s), int((r1 - a0) * s), int((c0 - b0) * s), int((c1 - b0) * s))
                yield (int(r0 * s), int(r1 * s), int(c0 * s), int(c1 * s)), own

    def forward(self, x) -> Fixed | Stored | TiledOutput:
        output = TiledOutput(self, x)
        if self.output == "lazy":
            return output
        return output.whole(stored=self.output == "stored")


class TiledOutput:
    """The output of a :class:`Tiled` transform, computed tile by tile when read."""

    def __init__(self, tiled: Tiled, x):
        self.tiled, self.x = tiled, x

    def tiles(self) -> Iterator[tuple[tuple[int, int, int, int], Fixed]]:
        return self.tiled.tiles(self.x)

    def whole(self, stored: bool = False) -> Fixed | Stored:
        """All tiles in one :class:`Fixed`, or in one :class:`Stored` (int32)."""
        out = None
        for (r0, r1, c0, c1), part in self.tiles():
            if out is None:
                h, w = self.x.shape[-2:]
                size = (self.x.shape[0], part.shape[1], int(h * self.tiled.scale), int(w * self.tiled.scale))
                values = part.value.new_empty(size, dtype=torch.int32 if stored else DTYPE)
                out = Stored(values, part.frac) if stored else Fixed(values, part.frac)
            (out.values if stored else out.value)[:, :, r0:r1, c0:c1] = part.value
        return out


class Local(ExactModule):
    """``inner``, evaluated region by region when its output is read (:class:`LocalOutput`).

    For a layer whose outputs depend on its inputs within ``halo`` input pixels (the fusion's
    3×3 then 1×1 convolutions: 1; the hyper-synthesis, which upsamples ``scale`` = 4 times:
    the tests measure it), a region computed from the inputs cropped ``halo`` wider (clipped
    at the border, where the whole computation zero-pads too) is identical to that region of
    the whole output. So the fusion and the hyper-synthesis never run image-wide: the tiled
    synthesis and the entropy coder read their outputs a region at a time. With
    ``whole_rows`` (the hyper-synthesis, whose ×4 upsampling would otherwise be recomputed
    for every tile) a request computes its rows across the full width and keeps that band,
    so the tiles of one row of tiles, and the entropy coder's next rows, reuse it.
    """

    def __init__(self, inner: ExactModule, halo: int, scale: int = 1, whole_rows: bool = False):
        super().__init__()
        self.inner, self.halo, self.scale, self.whole_rows = inner, int(halo), int(scale), whole_rows

    def forward(self, *inputs: Fixed | Stored | LocalOutput | None) -> LocalOutput:
        return LocalOutput(self, [x for x in inputs if x is not None])


class LocalOutput:
    """The output of a :class:`Local` layer; ``crop`` computes the region asked for."""

    def __init__(self, local: Local, inputs: list):
        self.local, self.inputs = local, inputs
        b, c, h, w = inputs[0].shape
        s = local.scale
        self.shape = (b, c if s == 1 else None, h * s, w * s)  # channels: known when kept
        self._band: tuple[int, int, Fixed] | None = None

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> Fixed:
        if not self.local.whole_rows:
            return self._region(r0, r1, c0, c1)
        if self._band is None or not (self._band[0] <= r0 and r1 <= self._band[1]):
            self._band = None  # free the old band before computing the next
            self._band = (r0, r1, self._region(r0, r1, 0, self.shape[-1]))
        first, _, band = self._band
        return band.crop(r0 - first, r1 - first, c0, c1)

    def _region(self, r0: int, r1: int, c0: int, c1: int) -> Fixed:
        h, w = self.inputs[0].shape[-2:]
        s, halo = self.local.scale, self.local.halo
        a0, a1 = max(0, r0 // s - halo), min(h, -(-r1 // s) + halo)
        b0, b1 = max(0, c0 // s - halo), min(w, -(-c1 // s) + halo)
        out = self.local.inner(*(x.crop(a0, a1, b0, b1) for x in self.inputs))
        return out.crop(r0 - a0 * s, r1 - a0 * s, c0 - b0 * s, c1 - b0 * s)


def resolution_scale(module: nn.Module) -> float:
    """Output size over input size of a transform: its strided convolutions (down) and
    transposed convolutions (up) multiplied together."""
    scale = 1.0
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            scale *= m.stride[0]
        elif isinstance(m, nn.Conv2d):
            scale /= m.stride[0]
    return scale


def convert(module: nn.Module, name: str, plan: Plan) -> ExactModule:
    """The exact twin of ``module`` (named ``name`` in its model), with output bits from ``plan``."""
    for kind, converter in _CONVERTERS.items():
        if type(module) is kind:
            return converter(module, name, plan)
    raise TypeError(f"{name}: no exact form for {type(module).__name__}")


def _child(module: nn.Module, name: str, child: str, plan: Plan) -> ExactModule:
    return convert(getattr(module, child), f"{name}.{child}" if name else child, plan)


def _sequential(module: nn.Sequential, name: str, plan: Plan) -> ExactModule:
    return ExactSequential([convert(m, f"{name}.{i}", plan) for i, m in enumerate(module)])


def _upsample(module: nn.Upsample, name: str, plan: Plan) -> ExactModule:
    factor = module.scale_factor
    if module.mode != "nearest" or factor is None or float(factor) != int(factor):
        raise TypeError(f"{name}: only nearest upsampling by an integer factor has an exact form")
    return ExactUpsample(int(factor))


def _residual_block(module: ResidualBlock, name: str, plan: Plan) -> ExactModule:
    skip = None if module.skip is None else _child(module, name, "skip", plan)
    return ExactResidualBlock(
        _child(module, name, "conv1", plan), _child(module, name, "conv2", plan),
        _child(module, name, "leaky_relu", plan), skip, plan[name],
    )


_CONVERTERS: dict[type, Callable[[nn.Module, str, Plan], ExactModule]] = {
    nn.Conv2d: lambda m, name, plan: ExactConv2d(m, plan[name]),
    CheckerboardContext: lambda m, name, plan: ExactConv2d(m, plan[name], m.masked_weight()),
    MeanScaleHead: _mean_scale_head,
    nn.ConvTranspose2d: lambda m, name, plan: ExactConvTranspose2d(m, plan[name]),
    GDN: lambda m, name, plan: ExactGDN(m, plan[name]),
    nn.ReLU: lambda m, name, plan: ExactReLU(),
    nn.LeakyReLU: lambda m, name, plan: ExactLeakyReLU(m.negative_slope),
    nn.Upsample: _upsample,
    nn.Sequential: _sequential,
    ResidualBlock: _residual_block,
    LatentFusion: lambda m, name, plan: ExactLatentFusion(_child(m, name, "body", plan), plan[f"{name}.body:in"], plan[name]),
    GainUnit: lambda m, name, plan: ExactGain(m.gain, plan[name], m.units),
    _HyperSynthesisWithSkip: lambda m, name, plan: ExactSum(_child(m, name, "trunk", plan), _child(m, name, "skip", plan), plan[name]),
}
