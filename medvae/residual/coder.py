"""Exact residual coding: lossless (τ = 0) and near-lossless (|error| ≤ τ on every pixel).

Given the base layer's reconstruction x̃ (exact, the same on every machine), the residual
r = x − x̃ is coded in the four passes of :mod:`medvae.residual.model`. For each pixel the
exact twin of the residual network gives an integer mean μ and a table index; the coder
writes ``q = sign(e)·⌊(|e| + τ)/(2τ + 1)⌋`` of ``e = r − μ`` under that table's bounded law
(:mod:`medvae.residual.folding`: the mass of the values the pixel cannot take, beyond its
bounds, folded onto them), and every decoder rebuilds ``x̂ = clip(x̃ + μ + (2τ + 1)·q)`` to the
pixel's bounds: the intensity range of the header, or the base's value where the base is
exact. A file may code its first ``j`` passes (1 ≤ j ≤ 3) with the bound τ − 1
(``tighter_passes``): rates between those of τ and τ − 1, for rate control; every pixel is
then within τ − 1 or τ, and the file declares τ. Files of formats 4 and 7 (the release
before) used the tables unfolded, through CompressAI's coder, and clipped to the dtype; they
decode as they did.

Why the bound holds everywhere: ``|e − (2τ + 1)q| ≤ τ`` for every integer ``e`` (q rounds
e/(2τ + 1) to the nearest integer), so ``|x − (x̃ + μ + (2τ + 1)q)| ≤ τ``, and clipping to
bounds where x lies can only bring a value closer; a symbol moved to the bound it decodes to
changes no pixel. Why every decoder computes the same μ, table, law and x̂: the network's
inputs are correctly rounded divisions of integers, the network runs in the exact
fixed-point arithmetic of :mod:`medvae.exact`, μ is an exact product rounded once, the table
index an exact comparison of an exact base-2 logarithm (:func:`medvae.residual.tables.log2_fixed`
for the range and for 2τ + 1), the tables are integers built without a float ``exp``, and
the bounds and folded intervals are integer arithmetic on them. The pixel checksum then confirms it.
A file may also carry a per-image adaptation of each pass's mean and table index, fitted by the
encoder and applied in int64 arithmetic (:mod:`medvae.residual.adaptation`, which says why that
too is exact).

Optimized coding (``optimize``, formats 18 to 20) trades the bound for fewer bits at the same
PSNR, for rate control's targets: the encoder moves a symbol one step toward 0 where that saves
more bits than its squared error costs (:func:`_optimized`), and each pass's nonzero symbols
decode ``offset`` closer to the mean (:func:`reconstruct`), an integer the encoder fits to the
pass and writes. The decoded pixels are still integer functions of the file, so every decoder
gets the same image; the error bound is then the one the encoder measures on them (at most
3τ + 1 + offset), which the file declares.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
import torch
from compressai.ans import RansDecoder
from torch import nn

from medvae.errors import BitstreamError, InputError
from medvae.exact.calibrate import INPUT, Plan
from medvae.exact.fixed import Fixed, from_real, pow2
from medvae.exact.layers import ExactModule, ExactSequential, Tiled, convert
from medvae.exact.twin import CHUNK, guarded
from medvae.residual import adaptation, folding, rans
from medvae.residual.model import CONTEXT_GAIN, PHASES, ResidualModel, block_offset, input_channels, model_inputs
from medvae.residual.tables import LOG2_FRAC, interval_bits, log2_fixed, table_index, tables

#: Half-resolution tile of the residual network (memory stays that of one tile; the result
#: is identical to the whole computation, see :class:`medvae.exact.layers.Tiled`).
TILE = 256
#: Largest error bound a file may declare (the container's u16).
MAX_ERROR = 65535
#: Largest |residual| a valid file decodes to: |x − x̃| ≤ 65535 for 16-bit samples, and the
#: decoded residual lies within τ ≤ 65535 of it. Decoded residuals are clipped to this (only
#: a forged file reaches it, and its checksum then fails), so they, the base and the image
#: are all held as int32: half the memory of int64, the same values.
RESIDUAL_LIMIT = 65535 + MAX_ERROR


class PassOutputs(NamedTuple):
    """The residual network's output for one pass (half-resolution grid)."""

    mean: np.ndarray  # integer means (int64)
    log2_scale: np.ndarray  # log2 of the scale over the intensity span (float64, exact)


class _Inputs:
    """The network's input, built region by region (half-resolution coordinates) for ``Tiled``."""

    def __init__(
        self, base: np.ndarray, residual: np.ndarray, known: np.ndarray, value_range: tuple[int, int], frac: int,
        previous: np.ndarray | None, bound: np.ndarray | None,
    ):
        self.base, self.residual, self.known, self.frac, self.previous, self.bound = base, residual, known, frac, previous, bound
        self.lo, self.hi = (float(v) for v in value_range)
        self.shape = (1, input_channels(0 if previous is None else len(previous), bound is not None), base.shape[0] // 2, base.shape[1] // 2)

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> Fixed:
        size = (2 * (r1 - r0), 2 * (c1 - c0))
        region = lambda a: torch.from_numpy(np.ascontiguousarray(a[..., 2 * r0 : 2 * r1, 2 * c0 : 2 * c1])).reshape(1, -1, *size)  # noqa: E731
        optional = lambda a: None if a is None else region(a).to(torch.float64)  # noqa: E731
        inputs = model_inputs(
            region(self.base).to(torch.float64), region(self.residual).to(torch.float64), region(self.known),
            self.lo, self.hi, optional(self.previous), optional(self.bound),
        )
        return from_real(inputs, self.frac)


def quantize(error: np.ndarray, max_error: int) -> np.ndarray:
    """``sign(e)·⌊(|e| + τ)/(2τ + 1)⌋``: the nearest multiple of 2τ + 1, in units of it."""
    step = 2 * max_error + 1
    return np.sign(error) * ((np.abs(error) + max_error) // step)


class ResidualCoder:
    """The exact residual coder of one trained :class:`ResidualModel` under calibration ``plan``."""

    def __init__(self, model: ResidualModel, plan: Plan):
        net = model.eval().net
        body = [convert(m, f"net.{i}", plan) for i, m in enumerate(net[:-1])]  # converted once, shared by the four passes
        self.nets = tuple(  # indexed by block offset (model.block_offset), not by pass
            Tiled(_pass_network(body, net[-1], plan, k), 1.0, TILE, model.receptive_radius, output="lazy") for k in range(4)
        )
        self.input_frac = plan[INPUT]
        #: A series model: how many previous slices of the series every call needs (their decoded
        #: pixels, :meth:`_previous`); 0 for a model that codes a slice alone.
        self.series = model.previous
        #: The model reads each pixel's error bound (:func:`bound_map`).
        self.bounds = model.bounds

    # --- parameters ----------------------------------------------------------------
    def _outputs(
        self, base: np.ndarray, residual: np.ndarray, known: np.ndarray, value_range: tuple[int, int], phase: tuple[int, int],
        previous: np.ndarray | None, bound: np.ndarray,
    ) -> PassOutputs:
        """The network's output for one pass's pixels, on the half-resolution grid: integer
        means, and the log2 scales before the bound's offset (exact float64 multiples of a power
        of two). ``bound``: each pixel's error bound (:func:`bound_map`; read if the model reads them)."""
        span = value_range[1] - value_range[0]
        k = block_offset(phase)
        h, w = base.shape[0] // 2, base.shape[1] // 2
        mean, log2_scale = np.empty((h, w), np.int64), np.empty((h, w), np.float64)
        with torch.inference_mode():
            for (r0, r1, c0, c1), part in self.nets[k](_Inputs(base, residual, known, value_range, self.input_frac, previous, bound if self.bounds else None)).tiles():
                unit = pow2(-part.frac)
                mu = torch.round(part.value[0, 0] * unit * span / CONTEXT_GAIN)  # < 2^24 · 2^17, then a power of two: exact
                mean[r0:r1, c0:c1] = mu.cpu().numpy()
                log2_scale[r0:r1, c0:c1] = (part.value[0, 1] * unit).to(torch.float64).cpu().numpy()
        return PassOutputs(mean, log2_scale)

    def first_pass(
        self, base: np.ndarray, value_range: tuple[int, int], previous: np.ndarray | None = None, bounds: tuple[int, ...] = (0,) * 4
    ) -> PassOutputs:
        """The first pass's network output for ``base`` (and ``previous``, for a series model) and
        the passes' error ``bounds`` (:func:`pass_bounds`; read only by a model that reads the
        bounds): it reads no decoded residual, so it is the same for every bound but for such a
        model; :meth:`encode` takes it to skip that network pass (rate control codes one base with many bounds)."""
        padded, before = _even(base.astype(np.int32), edge=True), self._previous(previous, base)
        nothing = np.zeros(padded.shape, np.int32)
        return self._outputs(padded, nothing, nothing.astype(bool), value_range, PHASES[0], before, bound_map(padded.shape, bounds))

    def _previous(self, previous: np.ndarray | None, base: np.ndarray) -> np.ndarray | None:
        """The previous slices as the network reads them ((n, H', W'), even-sized, int32), or
        None; an :class:`InputError` when a series model lacks them or gets another number of
        slices, or another model is given any. ``previous``: one slice (H, W), or (n, H, W), nearest first."""
        planes = None if previous is None else previous.reshape(-1, *previous.shape[-2:])
        if (0 if planes is None else len(planes)) != self.series:
            raise InputError(f"this residual model codes a slice given {self.series} previous slice(s) of its series, "
                             f"not {0 if planes is None else len(planes)}")
        if planes is None:
            return None
        if planes.shape[1:] != base.shape:
            raise InputError(f"the previous slice is {planes.shape[1]}x{planes.shape[2]}, this one {base.shape[0]}x{base.shape[1]}")
        return np.stack([_even(p.astype(np.int32), edge=True) for p in planes])

    @staticmethod
    def _indexes(outputs: PassOutputs, value_range: tuple[int, int], bound: int) -> np.ndarray:
        """Table indexes for the bound: log2(scale) = network output + log2(hi − lo) − log2(2τ + 1),
        all multiples of 2^-16 (or of a finer power of two) well inside float64: the sum is exact."""
        offset = (log2_fixed(value_range[1] - value_range[0]) - log2_fixed(2 * bound + 1)) * pow2(-LOG2_FRAC)
        return table_index(torch.from_numpy(outputs.log2_scale + offset)).numpy()

    # --- coding ----------------------------------------------------------------------
    def encode(
        self, image: np.ndarray, base: np.ndarray, value_range: tuple[int, int], max_error: int, tighter_passes: int = 0,
        first_pass: PassOutputs | None = None, exact: np.ndarray | None = None, previous: np.ndarray | None = None,
        adapt: bool = True, optimize: bool = False,
    ) -> tuple[list[bytes], np.ndarray]:
        """The strings of the residual of ``image`` over ``base`` with bound ``max_error`` (the
        first ``tighter_passes`` passes: ``max_error − 1``) under the bounded laws of
        :mod:`medvae.residual.folding` (format 8), and the image every decoder will get from them.
        ``first_pass``: :meth:`first_pass` of this base and range, if already computed;
        ``exact``: where the base restores the image exactly (its exceptions), if anywhere;
        ``previous``: for a series model, the previous slices' decoded pixels (:meth:`_previous`);
        ``adapt``: fit the per-image adaptation of :mod:`medvae.residual.adaptation`, written as a
        third string where it saves bytes (formats 15 to 17); ``optimize`` (near-lossless only):
        rate–distortion optimized symbols and reconstruction offsets (formats 18 to 20: four strings,
        the adaptation, however small, then the offsets), no longer within ``max_error``."""
        bounds = pass_bounds(max_error, tighter_passes)
        if optimize and (max_error == 0 or not adapt):
            raise InputError("optimized coding is near-lossless (max_error >= 1) and adapts the laws")
        before = self._previous(previous, base)
        lower, upper = pixel_bounds(base, value_range, exact)
        if ((image < lower) | (image > upper)).any():
            raise ValueError("the image leaves the bounds the decoder will clip to (value range or exact pixels)")
        encoder, escapes = rans.Encoder(rans.lane_count(image.size)), folding.Escapes()
        residual = _even(np.subtract(image, base, dtype=np.int32))

        offsets = [] if optimize else None

        def code(mean: np.ndarray, index: np.ndarray, phase: tuple[int, int], bound: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
            r = _pass_residual(residual, phase, mean.shape)
            q, coded, laws = _symbols(mean, index, r, low, high, bound)
            if offsets is not None:
                q, offset = _optimized(q, coded, laws, mean, r, low, high, bound)
                offsets.append(offset)
            folding.encode(encoder, escapes, laws, q[coded])
            return q

        fitter = _Fitter(residual) if adapt else None
        final = _add(base, self._passes(base, value_range, bounds, code, first_pass, (lower, upper), before, fitter, offsets))
        strings = [encoder.finish(), bytes(escapes.written)]
        if fitter is not None and ((block := adaptation.Adaptation(tuple(fitter.passes))).active or optimize):
            strings.append(block.to_bytes())
        if offsets is not None:
            strings.append(_OFFSETS.pack(*offsets))
        return strings, final

    def decode(
        self, strings: list[bytes], base: np.ndarray, value_range: tuple[int, int], max_error: int, tighter_passes: int = 0,
        exact: np.ndarray | None = None, bounded: bool = True, previous: np.ndarray | None = None, laws: bool = True,
        optimized: bool = False,
    ) -> np.ndarray:
        """The image :meth:`encode` coded: ``base`` plus the decoded residual, clipped to the bounds
        (``bounded``: format 8; else a format 4 or 7 file, coded with CompressAI's tables and clipped
        to the dtype); ``previous``: for a series model, the previous slices' decoded pixels;
        ``laws``: an adaptation block names its passes' laws (formats 15 to 17; 12 to 14: not);
        ``optimized``: an optimized file (formats 18 to 20; ``max_error``: its quantizer's bound)."""
        bounds = pass_bounds(max_error, tighter_passes)
        before = self._previous(previous, base)
        if bounded:
            return self._decode_bounded(strings, base, value_range, bounds, exact, before, laws, optimized)
        needed = sum(_chunk_count(_phase_size(base.shape, phase)) for phase in PHASES)
        if len(strings) != needed:
            raise BitstreamError(f"corrupted bitstream: {len(strings)} residual strings where {needed} are needed")
        decoder = RansDecoder()
        cdfs, lengths, offsets = tables()
        queue = iter(strings)

        def code(mean: np.ndarray, index: np.ndarray, phase: tuple[int, int], bound: int, *_) -> np.ndarray:
            values = []
            for (flat_index,) in _chunks(index):
                string = next(queue)
                values += decoder.decode_with_indexes(guarded(string, len(flat_index)), flat_index, cdfs, lengths, offsets)
            return np.asarray(values, np.int64).reshape(index.shape)

        return _add(base, self._passes(base, value_range, bounds, code))

    def _decode_bounded(
        self, strings: list[bytes], base: np.ndarray, value_range: tuple[int, int], bounds: tuple[int, ...], exact: np.ndarray | None,
        previous: np.ndarray | None, laws: bool, optimized: bool = False,
    ) -> np.ndarray:
        """A format-8 residual layer: the rANS stream and the escapes (two strings; formats 12 to 17
        add a third, the adaptation of the laws, :mod:`medvae.residual.adaptation`; formats 18 to 20
        a fourth, each pass's reconstruction offset), over ``base``."""
        if len(strings) not in ((4,) if optimized else (2, 3)):
            raise BitstreamError(f"corrupted bitstream: {len(strings)} residual strings where {'4 are' if optimized else '2 or 3 are'} needed")
        block = adaptation.Adaptation.from_bytes(strings[2], self.series, laws) if len(strings) >= 3 else None
        offsets = _read_offsets(strings[3], bounds) if optimized else None
        lower, upper = pixel_bounds(base, value_range, exact)
        decoder, escapes = rans.Decoder(strings[0], rans.lane_count(base.size)), folding.Escapes(strings[1])

        def code(mean: np.ndarray, index: np.ndarray, phase: tuple[int, int], bound: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
            q = np.zeros(mean.shape, np.int64)
            coded = low < high
            q[coded] = folding.decode(decoder, escapes, _laws(mean, index, low, high, coded, bound))
            return q

        def adapt(p: int, planes, mean: np.ndarray, index: np.ndarray, low: np.ndarray, high: np.ndarray, bound: int):
            mean, index = block.passes[p].apply(planes, mean, index)
            return (adaptation.within_reach(mean, index, low, high, 2 * bound + 1) if block.passes[p].reach else mean), index

        decoded = self._passes(
            base, value_range, bounds, code, limits=(lower, upper), previous=previous, adapt=None if block is None else adapt, offsets=offsets,
        )
        decoder.finish()
        escapes.finish()
        return _add(base, decoded)

    def _passes(
        self, base: np.ndarray, value_range: tuple[int, int], bounds: tuple[int, ...], code, first_pass: PassOutputs | None = None,
        limits: tuple[np.ndarray, np.ndarray] | None = None, previous: np.ndarray | None = None, adapt=None,
        offsets: list[int] | None = None,
    ) -> np.ndarray:
        """Run the four passes, pass ``p`` with error bound ``bounds[p]``: parameters from what is
        decoded so far (the first pass's: ``first_pass``, when given), then ``code(mean, index, phase,
        bound)`` on the pass's pixels, which writes or reads their quantized residuals; with ``limits``,
        the pixels' (lower, upper) bounds, ``code`` also gets them as residual bounds, and the decoded
        residuals are clipped to them; ``previous``: the series model's (even-sized) previous slices;
        ``adapt(p, planes, mean, index, low, high, bound)`` (with ``limits``): the pass's adapted
        (mean, index), ``planes()`` giving its features (:mod:`medvae.residual.adaptation`);
        ``offsets`` (with ``limits``): each pass's reconstruction offset (:func:`reconstruct`), read
        after ``code`` has run for the pass (an optimizing encoder's ``code`` appends it).
        Returns the decoded residual (even-sized)."""
        padded = _even(base.astype(np.int32), edge=True)
        decoded = np.zeros(padded.shape, np.int32)
        each_bound = bound_map(padded.shape, bounds)
        known = np.zeros(padded.shape, bool)
        for p, (phase, bound) in enumerate(zip(PHASES, bounds)):
            outputs = (
                first_pass if p == 0 and first_pass is not None
                else self._outputs(padded, decoded, known, value_range, phase, previous, each_bound)
            )
            rows, cols = _phase_size(base.shape, phase)
            mean, index = outputs.mean[:rows, :cols], self._indexes(outputs, value_range, bound)[:rows, :cols]
            grid = (slice(phase[0], None, 2), slice(phase[1], None, 2))
            if limits is None:
                q = code(mean, index, phase, bound)
                values = np.clip(mean + (2 * bound + 1) * q, -RESIDUAL_LIMIT, RESIDUAL_LIMIT)  # int64, then exact in int32
            else:
                at_base = base[grid].astype(np.int64)
                low, high = (limit[grid].astype(np.int64) - at_base for limit in limits)
                if adapt is not None:
                    planes = lambda row_step=1, p=p, mean=mean: adaptation.features(p, mean, decoded, padded, previous, row_step)  # noqa: E731
                    mean, index = adapt(p, planes, mean, index, low, high, bound)
                q = code(mean, index, phase, bound, low, high)
                offset = 0 if offsets is None else offsets[p]
                values = np.clip(reconstruct(mean, q, bound, offset, low, high), -RESIDUAL_LIMIT, RESIDUAL_LIMIT)  # a valid file's bounds lie within the limit
            decoded[grid][:rows, :cols] = values
            known[grid][:rows, :cols] = True
        return decoded


class _Fitter:
    """The encoder's side of :mod:`medvae.residual.adaptation`: fits each pass's adaptation
    against the true ``residual`` (even-sized) and keeps them, in pass order."""

    def __init__(self, residual: np.ndarray):
        self.residual, self.passes = residual, []

    def __call__(self, p: int, planes, mean: np.ndarray, index: np.ndarray, low: np.ndarray, high: np.ndarray, bound: int):
        r = _pass_residual(self.residual, PHASES[p], mean.shape)
        reach = lambda m, i: adaptation.within_reach(m, i, low, high, 2 * bound + 1)  # noqa: E731
        cost = lambda m, i: _cost(reach(m, i), i, r, low, high, bound)  # noqa: E731
        fitted, mean, index = adaptation.fit(planes, mean, index, r, (r > low) & (r < high), cost)
        within = reach(mean, index)
        reached = bool(((within != mean) & (low < high)).any())  # a pass whose coded pixels the clip leaves alone needs no flag
        self.passes.append(fitted._replace(reach=reached))
        return within, index


def _pass_residual(residual: np.ndarray, phase: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A pass's pixels of the (even-sized) residual, as int64 of the pass's ``shape``."""
    return residual[phase[0] :: 2, phase[1] :: 2][: shape[0], : shape[1]].astype(np.int64)


def _symbols(
    mean: np.ndarray, index: np.ndarray, r: np.ndarray, low: np.ndarray, high: np.ndarray, bound: int
) -> tuple[np.ndarray, np.ndarray, folding.BoundedLaws]:
    """What the encoder codes for a pass's residuals ``r``: every pixel's symbol (the coded ones'
    chosen by :func:`folding.cheapest`), which pixels it codes (a pixel with one possible value
    costs nothing), and their bounded laws."""
    q = quantize(r - mean, bound)
    coded = low < high
    laws = _laws(mean, index, low, high, coded, bound)
    q[coded] = folding.cheapest(laws, q[coded], r[coded], low[coded], high[coded], bound)
    return q, coded, laws


def reconstruct(mean: np.ndarray, q: np.ndarray, bound: int, offset: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The residuals symbols ``q`` decode to: ``μ + (2τ + 1)·q`` clipped to the pixel's residual
    bounds (int64); with an ``offset`` (optimized coding), a nonzero symbol whose value lies strictly
    inside the bounds decodes that much closer to ``μ`` (a symbol at a bound still decodes to it)."""
    values = mean + (2 * bound + 1) * q
    if offset:
        values = np.where((values > low) & (values < high), values - offset * np.sign(q), values)
    return np.clip(values, low, high)


#: The offsets block of an optimized file: one u16 per pass.
_OFFSETS = struct.Struct("<4H")
#: Optimized coding weighs a squared error at λ = OPTIMIZED_SLOPE · 6/(ln 2 · (2τ + 1)²) bits a
#: squared unit: the slope of a uniform quantizer of step 2τ + 1 at high rate, times this.
OPTIMIZED_SLOPE = 2


def _optimized(
    q: np.ndarray, coded: np.ndarray, laws: folding.BoundedLaws, mean: np.ndarray, r: np.ndarray, low: np.ndarray,
    high: np.ndarray, bound: int,
) -> tuple[np.ndarray, int]:
    """Optimized coding's symbols of a pass, and its reconstruction offset. A coded pixel's nonzero
    symbol moves one step toward 0 where the bits it saves outweigh λ times the squared error it
    adds (λ: :data:`OPTIMIZED_SLOPE`; both sides exact integers, in 2^-16 bit times (2τ + 1)²),
    under the offset fitted to the symbols as quantized; the offset is then fitted to the symbols
    chosen (:func:`_fit_offset`). Only the encoder runs this: the decoder reads the symbols and offset."""
    step = 2 * bound + 1
    symbols, m, rc, lo, hi = q[coded], mean[coded], r[coded], low[coded], high[coded]
    offset = _fit_offset(symbols, m, rc, bound, lo, hi)
    toward = np.clip(symbols - np.sign(symbols), laws.q_low, laws.q_high)
    bits = interval_bits()
    cost = lambda s: (  # noqa: E731
        bits[laws.intervals(laws.positions(s))[1]] * step**2
        + np.square(rc - reconstruct(m, s, bound, offset, lo, hi)) * (_UNIFORM_SLOPE * OPTIMIZED_SLOPE)
    )
    symbols = np.where((symbols != 0) & (cost(toward) < cost(symbols)), toward, symbols)
    out = q.copy()
    out[coded] = symbols
    return out, _fit_offset(symbols, m, rc, bound, lo, hi)


def _fit_offset(q: np.ndarray, mean: np.ndarray, r: np.ndarray, bound: int, low: np.ndarray, high: np.ndarray) -> int:
    """The offset (0 to τ) that brings a pass's nonzero symbols closest to their residuals ``r`` in
    squared error: the rounded mean of ``sign(q)·(μ + (2τ + 1)·q − r)`` over the pixels whose value
    lies strictly inside their bounds (clipping decides the others), in integer arithmetic."""
    value = mean + (2 * bound + 1) * q
    inside = (q != 0) & (value > low) & (value < high)
    n = int(inside.sum())
    if not n:
        return 0
    total = int((np.sign(q[inside]) * (value[inside] - r[inside])).sum())
    return int(min(max((2 * total + n) // (2 * n), 0), bound))


def _read_offsets(data: bytes, bounds: tuple[int, ...]) -> list[int]:
    """The offsets block of an optimized file; :class:`BitstreamError` unless each offset is
    within its pass's bound."""
    if len(data) != _OFFSETS.size:
        raise BitstreamError(f"corrupted residual offsets block ({len(data)} bytes where {_OFFSETS.size} are needed)")
    offsets = list(_OFFSETS.unpack(data))
    if any(offset > bound for offset, bound in zip(offsets, bounds)):
        raise BitstreamError("corrupted residual offsets block (an offset beyond its pass's bound)")
    return offsets


def _cost(mean: np.ndarray, index: np.ndarray, r: np.ndarray, low: np.ndarray, high: np.ndarray, bound: int) -> int:
    """What a pass costs under these laws, in 2^-16 bit (an exact integer,
    :data:`medvae.residual.adaptation.COST_FRAC`): the bits the coder spends (each symbol's
    interval, the escapes' varints), plus, near-losslessly, λ times the squared error of the
    pixels it decodes to, λ = 4 · 6/(ln 2 · (2τ + 1)²) bits per squared unit: four times the
    slope of a uniform quantizer of step 2τ + 1 at high rate (dR/dD = −1/(2 ln 2 · D),
    D = (2τ + 1)²/12), because a pass's error also enters the contexts of the passes after it and
    of the next slices of a series, which read the decoded pixels. Without it, a change of the
    laws that saves bits at a bound could cost more fidelity than the bits are worth (rate
    control to a PSNR would then pay for it with a tighter bound; ``docs/lossless.md``)."""
    q, coded, laws = _symbols(mean, index, r, low, high, bound)
    position = laws.positions(q[coded])
    escapes = folding.Escapes()
    escapes.write(q[coded], laws, position == laws.escape)
    bits = int(interval_bits()[laws.intervals(position)[1]].sum()) + (len(escapes.written) << (adaptation.COST_FRAC + 3))
    if bound == 0:
        return bits
    error = r[coded] - reconstruct(mean[coded], q[coded], bound, 0, low[coded], high[coded])  # exact integers; uncoded pixels are exact
    return bits + int(np.square(error).sum()) * _SLOPE // (2 * bound + 1) ** 2


#: 6/ln 2 in 2^-16 bit, rounded: the slope of a uniform quantizer at high rate times its step²
#: (an integer, so costs stay exact).
_UNIFORM_SLOPE = 567_291
#: :func:`_cost`'s λ times (2τ + 1)²: four times the uniform quantizer's slope.
_SLOPE = 4 * _UNIFORM_SLOPE


def bound_map(shape: tuple[int, int], bounds: tuple[int, ...]) -> np.ndarray:
    """Each pixel's error bound (int32, even-sized ``shape``): that of its pass, ``bounds[p]`` on
    the pixels of :data:`PHASES` ``[p]``. Every decoder knows it from the header (τ and the
    tighter passes), before any pass."""
    out = np.empty(shape, np.int32)
    for phase, bound in zip(PHASES, bounds):
        out[phase[0] :: 2, phase[1] :: 2] = bound
    return out


def _pass_network(body: list[ExactModule], last: nn.Conv2d, plan: Plan, k: int) -> ExactSequential:
    """The exact residual network (``body``, the converted layers before the float ``last`` one)
    computing only the two outputs of block offset ``k`` (its mean and log2 scale): a quarter of
    the last layer's work. The twin's integer weights, bias and shifts are chosen per output
    channel (:func:`medvae.exact.fixed.weight_shifts`), so those two channels hold the very
    values the whole network's channels ``2k, 2k + 1`` would."""
    outputs = nn.utils.skip_init(nn.Conv2d, last.in_channels, 2, last.kernel_size, padding=last.padding)  # no draw from the global RNG
    with torch.no_grad():
        outputs.weight.copy_(last.weight[2 * k : 2 * k + 2])
        outputs.bias.copy_(last.bias[2 * k : 2 * k + 2])
    return ExactSequential([*body, convert(outputs, f"net.{len(body)}", plan)])


def pixel_bounds(base: np.ndarray, value_range: tuple[int, int], exact: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's (lower, upper) bound, known to every decoder (int32): the intensity range,
    or the base's value where the base is ``exact`` (padding and extreme pixels it restores)."""
    lower = np.full(base.shape, value_range[0], np.int32)
    upper = np.full(base.shape, value_range[1], np.int32)
    if exact is not None:
        lower[exact] = upper[exact] = base[exact]
    return lower, upper


def _laws(
    mean: np.ndarray, index: np.ndarray, low: np.ndarray, high: np.ndarray, coded: np.ndarray, bound: int
) -> folding.BoundedLaws:
    """The bounded laws of a pass's ``coded`` pixels (they keep their symbol ranges)."""
    return folding.BoundedLaws(index[coded], *folding.symbol_range(mean[coded], low[coded], high[coded], 2 * bound + 1))


def pass_bounds(max_error: int, tighter_passes: int = 0) -> tuple[int, ...]:
    """The error bound of each of the four passes: ``max_error − 1`` for the first
    ``tighter_passes`` (0 to 3; only with ``max_error ≥ 1``), ``max_error`` for the others."""
    check_max_error(max_error)
    if isinstance(tighter_passes, bool) or not isinstance(tighter_passes, (int, np.integer)) or not 0 <= tighter_passes < len(PHASES):
        raise InputError(f"tighter_passes must be an integer in 0..{len(PHASES) - 1}, got {tighter_passes!r}")
    if tighter_passes and max_error == 0:
        raise InputError("tighter_passes needs max_error >= 1 (lossless has no tighter bound)")
    return (max_error - 1,) * tighter_passes + (max_error,) * (len(PHASES) - tighter_passes)


def check_max_error(max_error: int) -> None:
    """Raise :class:`InputError` unless ``max_error`` is an integer bound a file can declare."""
    if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) or not 0 <= max_error <= MAX_ERROR:
        raise InputError(f"max_error must be an integer in 0..{MAX_ERROR}, got {max_error!r}")


def _even(a: np.ndarray, edge: bool = False) -> np.ndarray:
    """``a`` padded to even height and width (the last row/column repeated, or zeros)."""
    pad = ((0, a.shape[0] % 2), (0, a.shape[1] % 2))
    return np.pad(a, pad, mode="edge" if edge else "constant") if any(p for _, p in pad) else a


def _phase_size(shape: tuple[int, int], phase: tuple[int, int]) -> tuple[int, int]:
    """Pixels of the image in one pass: rows and columns of its sub-grid."""
    return (shape[0] - phase[0] + 1) // 2, (shape[1] - phase[1] + 1) // 2


def _chunk_count(size: tuple[int, int]) -> int:
    return max(1, -(-size[0] * size[1] // CHUNK))


def _chunks(*arrays: np.ndarray):
    """The arrays (symbols, indexes) as lists of at most :data:`CHUNK` values each, raster order."""
    flat = [a.reshape(-1) for a in arrays]
    for start in range(0, max(1, flat[0].size), CHUNK):
        yield tuple(a[start : start + CHUNK].tolist() for a in flat)


def _add(base: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """``base`` plus the (even-sized) decoded residual, clipped to the base's dtype; int32
    holds every sum (|base| < 2^16, |residual| ≤ :data:`RESIDUAL_LIMIT`)."""
    total = residual[: base.shape[0], : base.shape[1]] + base.astype(np.int32)
    info = np.iinfo(base.dtype)
    return np.clip(total, info.min, info.max, out=total).astype(base.dtype)
