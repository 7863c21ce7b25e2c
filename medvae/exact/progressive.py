"""The exact coding path of ``rnn-conv`` (:mod:`medvae.models.rnn_conv`): encoder, decoder and bits.

Why every machine decodes the same pixels (three sentences): the convolutions are the
exact integer products of :mod:`medvae.exact.layers`, and the LSTM's steps are clamps,
additions of powers of two, and products of a 16-bit gate with a value of at most 24 bits
(exact in float64, below 2^41), each rounded once, half to even, to a fixed number of
fractional bits. The cell state is bounded by construction, ``|c_t| <= |c_{t−1}| + 1``,
so :data:`CELL_FRAC` holds it for every iteration count allowed, and the reconstruction
adds increments divided by a power of two, which is exact. The bits are the signs of exact
values, and their tables are integer CDFs from the weights, so encoder and decoder agree.

The encoder runs this same path, so the residual it codes at each iteration is the one
every decoder reconstructs, and the bytes are the same on every machine too. Images are
coded whole (no tiles): the recurrent state spans the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvae.errors import BitstreamError
from medvae.exact.calibrate import Plan
from medvae.exact.fixed import Fixed, LIMIT, pow2, requantize, saturate
from medvae.exact.image import NormalizedImage
from medvae.exact.layers import ExactConv2d, concat
from medvae.exact.twin import CHUNK, band_count, decode_symbols, encode_symbols
from medvae.models.rnn_conv import DECODER_CELLS, ConvLSTMCell, RNNConv, gain_shift, table_indexes
from medvae.prediction import UNIT_STEP

#: Fractional bits of the gates (values in [0, 1]), the cell state (|c| <= 32), the hidden
#: state (|h| <= 1) and the image-sized values (input, residual, reconstruction, |v| <= 8).
GATE_FRAC, CELL_FRAC, HIDDEN_FRAC, IMAGE_FRAC = 16, 19, 23, 21
#: The most iterations :data:`CELL_FRAC` holds: |c_t| <= t + 1 <= 2^(24 − 19).
MAX_ITERATIONS = 2 ** (24 - CELL_FRAC) - 1


def _hard_sigmoid(v: Fixed) -> Tensor:
    """``clamp(v/4 + 1/2, 0, 1)`` at :data:`GATE_FRAC`: exact at ``frac + 2`` bits, then one rounding."""
    f = v.frac
    return requantize((v.value + pow2(f + 1)).clamp_(0.0, pow2(f + 2)), f + 2, GATE_FRAC)


def _hard_tanh(value: Tensor, frac: int) -> Tensor:
    """``clamp(v, −1, 1)`` at :data:`GATE_FRAC`."""
    return requantize(value.clamp(-pow2(frac), pow2(frac)), frac, GATE_FRAC)


class ExactConvLSTMCell(nn.Module):
    """:class:`~medvae.models.rnn_conv.ConvLSTMCell` in exact arithmetic."""

    def __init__(self, cell: ConvLSTMCell, name: str, plan: Plan):
        super().__init__()
        # The gates' pre-activation is the sum of two convolutions: one bit more than either needs.
        frac = min(plan[f"{name}.input"], plan.get(f"{name}.hidden", plan[f"{name}.input"])) - 1
        self.input = ExactConv2d(cell.input, frac)
        self.hidden = ExactConv2d(cell.hidden, frac)

    def forward(self, x: Fixed, state: tuple[Tensor, Tensor] | None) -> tuple[Fixed, tuple[Tensor, Tensor]]:
        gates = self.input(x)
        if state is not None:
            gates = Fixed(saturate(gates.value + self.hidden(Fixed(state[0], HIDDEN_FRAC)).value), gates.frac)
        i, f, o, g = (Fixed(part, gates.frac) for part in gates.value.chunk(4, dim=1))
        # i·g is at 2·GATE_FRAC bits, f·c at GATE_FRAC + CELL_FRAC: both below 2^41, summed exactly.
        product = _hard_sigmoid(i) * _hard_tanh(g.value, g.frac) * pow2(CELL_FRAC - GATE_FRAC)
        if state is not None:
            product += _hard_sigmoid(f) * state[1]
        c = requantize(product, GATE_FRAC + CELL_FRAC, CELL_FRAC)
        h = requantize(_hard_sigmoid(o) * _hard_tanh(c, CELL_FRAC), 2 * GATE_FRAC, HIDDEN_FRAC)
        return Fixed(h, HIDDEN_FRAC), (h, c)


def _pool(x: Fixed, factor: int) -> Fixed:
    """Average over ``factor``² blocks: an exact sum, divided by a power of two, rounded once."""
    if factor == 1:
        return x
    b, c, h, w = x.shape
    total = x.value.reshape(b, c, h // factor, factor, w // factor, factor).sum(dim=(3, 5))
    return Fixed(requantize(total, x.frac + 2 * int(math.log2(factor)), x.frac), x.frac)


class _Whole:
    """One image-sized output, read as tiles by :func:`medvae.exact.image.pixel_rows`."""

    def __init__(self, x: Fixed):
        self.x = x

    def tiles(self) -> Iterator[tuple[tuple[int, int, int, int], Fixed]]:
        h, w = self.x.shape[-2:]
        yield (0, h, 0, w), self.x


class ProgressiveTwin(nn.Module):
    """The exact coding path of an :class:`~medvae.models.rnn_conv.RNNConv` under ``plan``:
    the counterpart of :class:`~medvae.exact.twin.ExactTwin` that :class:`medvae.Codec` uses
    for progressive models (``iterate``, ``decode``, ``check_lengths``)."""

    progressive = True

    def __init__(self, model: RNNConv, plan: Plan):
        super().__init__()
        if model.max_iterations > MAX_ITERATIONS:
            raise ValueError(f"exact rnn-conv codes at most {MAX_ITERATIONS} iterations, not {model.max_iterations}")
        self.max_iterations, self.bits = model.max_iterations, model.bits
        self.enc_conv = ExactConv2d(model.enc_conv, plan["enc_conv"])
        self.binarizer = ExactConv2d(model.binarizer, plan["binarizer"])
        self.dec_conv = ExactConv2d(model.dec_conv, plan["dec_conv"])
        self.dec_out = ExactConv2d(model.dec_out, plan["dec_out"])
        for name in ("enc_rnn1", "enc_rnn2", "enc_rnn3", *DECODER_CELLS):
            setattr(self, name, ExactConvLSTMCell(getattr(model, name), name, plan))
        self._tables = model.bit_tables  # kept outside the module tree: rANS runs on the CPU
        self.chunk = CHUNK
        cdf = self._tables._quantized_cdf
        peak = torch.maximum(cdf[:, 1] - cdf[:, 0], cdf[:, 2] - cdf[:, 1]).double()
        #: The fewest bits each (iteration, channel) can cost: −log2 of its likeliest symbol, either context.
        self.min_bits = (-torch.log2(peak / 2**16)).reshape(self.max_iterations, self.bits, 2).amin(dim=2).sum(dim=1)

    @property
    def device(self) -> torch.device:
        return self.enc_conv.weight.device

    # --- one iteration, as RNNConv.encode_step / decode_step --------------------------------
    def _encode_step(self, r: Fixed, state: dict) -> Tensor:
        """The bits (0/1 int32) of residual ``r``."""
        h1, state["enc1"] = self.enc_rnn1(self.enc_conv(r), state.get("enc1"))
        h2, state["enc2"] = self.enc_rnn2(h1, state.get("enc2"))
        h3, state["enc3"] = self.enc_rnn3(h2, state.get("enc3"))
        code = self.binarizer(concat([_pool(h1, 4), _pool(h2, 2), h3], HIDDEN_FRAC))
        return (code.value >= 0).to(torch.int32)

    def _decode_step(self, bits: Tensor, state: dict) -> Fixed:
        d = self.dec_conv(Fixed(bits.to(self.device, torch.float64) * 2 - 1, 0))
        for name in DECODER_CELLS:
            d, state[name] = getattr(self, name)(d, state.get(name))
            d = Fixed(F.pixel_shuffle(d.value, 2), d.frac)
        return self.dec_out(d)

    def _add(self, x_hat: Tensor, increment: Fixed, iteration: int) -> Tensor:
        """``x̂ + increment / gain`` at :data:`IMAGE_FRAC` (the division shifts the binary point)."""
        shifted = increment.frac + gain_shift(iteration)
        return saturate(x_hat + requantize(increment.value, shifted, IMAGE_FRAC))

    def _start(self, shape: tuple[int, ...]) -> Tensor:
        return torch.full(shape, pow2(IMAGE_FRAC - 1), dtype=torch.float64, device=self.device)  # x̂₀ = ½

    # --- coding -------------------------------------------------------------------------
    def iterate(self, image: NormalizedImage, iterations: int) -> list[tuple[list[bytes], _Whole]]:
        """After each of ``iterations`` iterations: the strings so far (one group of bands per
        iteration, in order) and the reconstruction every decoder computes from them."""
        self._check_iterations(iterations)
        _, _, h, w = image.shape
        x = image.as_fixed(IMAGE_FRAC, self.device).crop(0, h, 0, w).value
        x_hat, enc, dec, previous, strings, outputs = self._start(x.shape), {}, {}, None, [], []
        for t in range(iterations):
            r = Fixed(saturate(x - x_hat), IMAGE_FRAC - gain_shift(t))  # (x − x̂)·gain, exactly
            bits = self._encode_step(r, enc).cpu()
            strings += encode_symbols(self._tables, bits, self._indexes(t, previous, bits.shape), self.chunk)
            x_hat = self._add(x_hat, self._decode_step(bits, dec), t)
            previous = bits
            outputs.append((list(strings), _Whole(Fixed(x_hat, IMAGE_FRAC))))
        return outputs

    def decode(
        self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK, predicted: None = None, step: int = UNIT_STEP
    ) -> _Whole:
        """The reconstruction from the strings :meth:`iterate` wrote; ``shape``: the bit planes'
        size (the image's over 16). Its files carry no base prediction or step (``predicted``: None)."""
        if predicted is not None or step != UNIT_STEP:
            raise BitstreamError("corrupted bitstream: rnn-conv files carry no base prediction or step")
        bands = band_count((self.bits, *shape), chunk)
        iterations = len(strings) // bands
        if len(strings) != iterations * bands:
            raise BitstreamError(f"corrupted bitstream: {len(strings)} strings are not whole iterations of {bands}")
        self._check_iterations(iterations, BitstreamError)
        bit_shape = (1, self.bits, *shape)
        x_hat, dec, previous = self._start((1, 1, 16 * shape[0], 16 * shape[1])), {}, None
        for t in range(iterations):
            group = strings[t * bands : (t + 1) * bands]
            bits = decode_symbols(self._tables, group, self._indexes(t, previous, bit_shape), bit_shape, chunk)
            if bool(((bits < 0) | (bits > 1)).any()):
                raise BitstreamError("corrupted bitstream: a binary code decoded to a value other than 0 or 1")
            x_hat = self._add(x_hat, self._decode_step(bits, dec), t)
            previous = bits
        return _Whole(Fixed(x_hat, IMAGE_FRAC))

    def check_lengths(self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK) -> None:
        """Refuse, before decoding, strings too short for the bits the header's image needs
        (each bit costs at least −log2 of its table's likeliest symbol)."""
        bands = band_count((self.bits, *shape), chunk)
        iterations = min(len(strings) // max(bands, 1), self.max_iterations)
        needed = 0.99 * float(self.min_bits[:iterations].sum()) * shape[0] * shape[1] - 128 * len(strings)
        have = sum(len(s) for s in strings)
        if 8 * have < needed:
            raise BitstreamError(
                f"corrupted bitstream: {have} bytes cannot hold {iterations} iterations of a "
                f"{shape[0]} x {shape[1]} code (at least {needed / 8:.0f} bytes)"
            )

    def _indexes(self, iteration: int, previous: Tensor | None, shape: tuple[int, ...]):
        index = table_indexes(iteration, self.bits, previous).expand(shape)
        return lambda r0, r1: index[:, :, r0:r1]

    def _check_iterations(self, iterations: int, error: type[Exception] = ValueError) -> None:
        if not 1 <= iterations <= self.max_iterations:
            raise error(f"rnn-conv codes 1 to {self.max_iterations} iterations, not {iterations}")


assert LIMIT >= 2 ** (CELL_FRAC + 4), "the cell state's range must fit the activation range"
