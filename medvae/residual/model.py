"""The residual layer's learned entropy model (lossy plus residual coding, DLPR-style).

After the lossy base layer, the decoder has the base reconstruction x̃. The residual
r = x − x̃ is coded in four passes over the 2×2 polyphase grid (:data:`PHASES`): the
pixels of pass p are coded under a discrete Laplace law whose mean and scale a small
convolutional network predicts from x̃ and the residuals of passes 0..p−1, so each
pass sees more context than the one before, and every pass is parallel (DLPR, Bai et al.,
TPAMI 2024, codes its residual with such a context model; ours is smaller, for the CPU).

Units: the network reads x̃ as ``(x̃ − lo)/(hi − lo)`` and decoded residuals as
``r · CONTEXT_GAIN/(hi − lo)``; it outputs the mean in the same units as the residuals it
reads, and ``log2(scale/(hi − lo))``. So one model serves any intensity range. Training
runs in float (:func:`residual_bits`); coding runs its exact twin (:mod:`medvae.residual.coder`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medvae.residual.tables import LAWS, LOGISTIC_OCTAVES, TAIL_BITS, TAIL_OCTAVES, TAIL_WEIGHT, family_tables, table_index
from medvae.series import MAX_PREVIOUS

#: Coding order of the 2×2 polyphase grid: (row, column) offsets of each pass.
PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))
#: Decoded residuals enter the network as ``r · CONTEXT_GAIN/(hi − lo)`` (a power of two), clamped to ±CONTEXT_LIMIT.
CONTEXT_GAIN = 256.0
CONTEXT_LIMIT = 16.0
#: Per 2×2 block, the network reads x̃, the decoded residuals and which are decoded (4 each).
IN_CHANNELS = 12
#: A series model also reads the previous slices of its series (one or two), each less x̃ (4 more
#: per block and slice), in the units of the decoded residuals: what the slices before predict
#: of this one's residual.
PREVIOUS_CHANNELS = 4
#: A model trained for near-lossless coding (``bounds``) also reads each pixel's error bound
#: (4 more per block; 0 where lossless), in the units of the residuals: how coarse its decoded
#: context is, and how coarsely its own pixels will be coded (:func:`model_inputs`).
BOUND_CHANNELS = 4
CHANNELS = 24
#: Negative slope of every LeakyReLU (a power of two: the exact twin's product is exact).
SLOPE = 0.125


class ResidualModel(nn.Module):
    """Works at half resolution on 2×2 blocks (``pixel_unshuffle``), so a pass costs a quarter
    of a full-resolution network. Output channels ``2k, 2k + 1`` are, for the pixel at offset
    ``k = 2·row + column`` of each block, ``mean · CONTEXT_GAIN/(hi − lo)`` and ``log2(scale/(hi − lo))``.
    ``blocks`` residual blocks (two 3×3 convolutions and a skip each) before the last
    convolution deepen the network and widen what it sees by two half-resolution pixels each.
    ``previous``: a series model's number of previous slices it reads (0: a slice alone; 1: the
    slice before; 2: also the one before that); ``bounds``: a model that also reads each pixel's
    error bound (:func:`model_inputs`)."""

    model_name = "residual"

    def __init__(self, channels: int = CHANNELS, blocks: int = 0, previous: int = 0, bounds: bool = False):
        super().__init__()
        if int(previous) not in range(MAX_PREVIOUS + 1):
            raise ValueError(f"a residual model reads 0 to {MAX_PREVIOUS} previous slices, not {previous}")
        self.channels, self.blocks, self.previous, self.bounds = channels, blocks, int(previous), bool(bounds)
        self.net = nn.Sequential(
            nn.Conv2d(input_channels(previous, bounds), channels, 3, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(SLOPE),
            *(_block(channels) for _ in range(blocks)),
            nn.Conv2d(channels, 8, 3, padding=1),
        )
        with torch.no_grad():  # start near a scale of 1/256 of the range: typical of a good base
            self.net[-1].bias.copy_(torch.tensor([0.0, -8.0] * 4))

    @property
    def receptive_radius(self) -> int:
        """Half-resolution outputs depend on inputs within this many half-resolution pixels
        (one per 3×3 convolution: four, and two per block)."""
        return 4 + 2 * self.blocks

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)


def input_channels(previous: int, bounds: bool) -> int:
    """Input channels of a residual network: 12, plus 4 per previous slice, plus 4 for the bounds."""
    return IN_CHANNELS + PREVIOUS_CHANNELS * previous + BOUND_CHANNELS * bounds


def _block(channels: int) -> nn.Module:
    """CompressAI's residual block (its exact twin is :class:`medvae.exact.layers.ExactResidualBlock`) with our slope."""
    from compressai.layers import ResidualBlock  # here: medvae info reads this module's constants without CompressAI

    block = ResidualBlock(channels, channels)
    block.leaky_relu = nn.LeakyReLU(SLOPE)
    return block


def deepened(model: ResidualModel, blocks: int, seed: int = 0) -> ResidualModel:
    """``model`` with ``blocks`` residual blocks (at least its own) that computes the same
    function: each new block's second convolution starts at zero, so the block adds nothing
    (LeakyReLU(0) = 0) until training moves it, and training starts from the trained loss."""
    if blocks < model.blocks:
        raise ValueError(f"cannot remove blocks from a residual model with {model.blocks}")
    generator = torch.Generator().manual_seed(seed)
    deep = ResidualModel(model.channels, blocks, model.previous, model.bounds)
    last = len(model.net) - 1  # the old last layer's index: the new blocks go there, the last layer after them
    with torch.no_grad():
        for layer in range(last):
            deep.net[layer].load_state_dict(model.net[layer].state_dict())
        for block in list(deep.net)[last:-1]:
            block.conv1.weight.copy_(0.01 * torch.randn(block.conv1.weight.shape, generator=generator))
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
        deep.net[-1].load_state_dict(model.net[-1].state_dict())
    return deep


def widened(model: ResidualModel, channels: int, seed: int = 0) -> ResidualModel:
    """``model`` with ``channels`` hidden channels (at least its own) that computes the same
    function: the new channels get small random input weights and zero output weights, so
    training a wider model starts from the trained one's loss instead of from scratch."""
    if channels < model.channels:
        raise ValueError(f"cannot narrow a {model.channels}-channel residual model to {channels}")
    if model.blocks:
        raise ValueError("widen a residual model before deepening it")
    generator = torch.Generator().manual_seed(seed)
    wide = ResidualModel(channels, previous=model.previous, bounds=model.bounds)
    convs = [m for m in wide.net if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for new, old in zip(convs, (m for m in model.net if isinstance(m, nn.Conv2d))):
            new.weight.copy_(0.01 * torch.randn(new.weight.shape, generator=generator))
            new.bias.zero_()
            new.weight[:, old.in_channels :] = 0.0  # the new channels' outputs are not read yet
            new.weight[: old.out_channels, : old.in_channels] = old.weight
            new.bias[: old.out_channels] = old.bias
    return wide


def with_previous(model: ResidualModel, count: int = 1) -> ResidualModel:
    """``model`` as a series model reading ``count`` previous slices that computes the same
    function: the new slices' input channels start with zero weights, so training starts from
    the trained loss (a plain model, or a series model reading fewer slices)."""
    if model.previous >= count:
        raise ValueError(f"the residual model already reads {model.previous} previous slice(s)")
    at = IN_CHANNELS + PREVIOUS_CHANNELS * model.previous
    return _with_inputs(model, at, PREVIOUS_CHANNELS * (count - model.previous), previous=count, bounds=model.bounds)


def with_bounds(model: ResidualModel) -> ResidualModel:
    """``model`` reading each pixel's error bound too, computing the same function (the new
    inputs' weights start at zero), so near-lossless training starts from the trained loss."""
    if model.bounds:
        raise ValueError("the residual model already reads the error bounds")
    return _with_inputs(model, input_channels(model.previous, False), BOUND_CHANNELS, previous=model.previous, bounds=True)


def _with_inputs(model: ResidualModel, at: int, count: int, previous: int, bounds: bool) -> ResidualModel:
    """``model`` with ``count`` zero-weight input channels inserted at channel ``at`` of its first layer."""
    out = ResidualModel(model.channels, model.blocks, previous, bounds)
    state = model.state_dict()
    first = state["net.0.weight"]
    state["net.0.weight"] = torch.cat([first[:, :at], first.new_zeros((first.shape[0], count, *first.shape[2:])), first[:, at:]], 1)
    out.load_state_dict(state)
    return out


def phase_mask(shape: tuple[int, ...], phase: tuple[int, int], device=None) -> Tensor:
    """Boolean (…, H, W) mask of the pixels of one pass."""
    h, w = shape[-2:]
    rows = torch.arange(h, device=device) % 2 == phase[0]
    cols = torch.arange(w, device=device) % 2 == phase[1]
    return (rows[:, None] & cols[None, :]).expand(shape)


def block_offset(phase: tuple[int, int]) -> int:
    """Channel of a phase's pixels after ``pixel_unshuffle(·, 2)``."""
    return 2 * phase[0] + phase[1]


def model_inputs(
    base: Tensor, residual: Tensor, known: Tensor, lo: Tensor | float, hi: Tensor | float, previous: Tensor | None = None,
    bound: Tensor | None = None,
) -> Tensor:
    """The network's (B, 12, H/2, W/2) input from (B, 1, H, W) integer-valued tensors (H, W even):
    the base reconstruction, the decoded residuals (read where ``known``) and ``known``, each
    as its four 2×2 phases; with ``previous`` (a series model: (B, n, H, W), the n previous slices,
    nearest first), 4 more per slice: its decoded pixels less the base, scaled and clamped as the
    residuals are; with ``bound`` (a
    model that reads the bounds), 4 more: each pixel's error bound (that of its pass, decoded or
    not: :func:`medvae.residual.coder.bound_map`), scaled as the residuals are and clamped.
    Each value is one correctly rounded division and an exact clamp (of an exact integer
    difference), and the rearrangement moves values only, so the exact coder computes it identically."""
    span = hi - lo
    context = torch.where(known, residual * CONTEXT_GAIN / span, torch.zeros_like(residual))
    planes = [(base - lo) / span, context.clamp(-CONTEXT_LIMIT, CONTEXT_LIMIT), known.to(base.dtype)]
    if previous is not None:
        planes.append(((previous - base) * CONTEXT_GAIN / span).clamp(-CONTEXT_LIMIT, CONTEXT_LIMIT))
    if bound is not None:
        planes.append((bound * CONTEXT_GAIN / span).clamp(0.0, CONTEXT_LIMIT))
    return F.pixel_unshuffle(torch.cat(planes, dim=1), 2)


def previous_tensor(previous, shape: tuple[int, int]) -> Tensor:
    """A series slice's previous slices ((H, W) for one, (n, H, W) for n, nearest first) as the
    float model takes them: (1, n, H, W), cropped to the even ``shape`` of :func:`slice_tensors`."""
    planes = previous.reshape(-1, *previous.shape[-2:])[:, : shape[0], : shape[1]]
    return torch.from_numpy(planes.astype("float32"))[None]


def slice_tensors(image, base, value_range: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One slice as the float model takes it: image and base (1, 1, H, W), cropped to even
    sides (the 2×2 blocks), and ``lo``, ``hi`` as (1, 1, 1, 1)."""
    h, w = (s - s % 2 for s in image.shape)
    as_tensor = lambda a: torch.from_numpy(a[:h, :w].astype("float32"))[None, None]  # noqa: E731
    lo, hi = (torch.tensor(float(v)).reshape(1, 1, 1, 1) for v in value_range)
    return as_tensor(image), as_tensor(base), lo, hi


def symbol_bits(
    error: Tensor, scale: Tensor, below: Tensor | None = None, above: Tensor | None = None, law: str = "laplace"
) -> Tensor:
    """The coder's bits for an integer ``error`` under the discrete law of ``scale`` (Laplace, or ``law``'s):
    −log2 P(error), probabilities floored at 2^-16 as the 16-bit tables floor them, plus
    :func:`escape_bits` for an error beyond the table. With ``below`` and ``above``, the errors
    of a pixel at its bounds, the law is the coder's bounded law (:mod:`medvae.residual.folding`):
    an error at ``below`` carries the mass of every error at or below it, one at ``above`` that
    of every error at or above it, and a pixel whose bounds meet costs nothing. ``law``: one of
    :data:`medvae.residual.tables.LAWS`, the family whose table of ``scale`` codes it ("mixed":
    the tables of formats 15 to 17)."""
    coded = error if below is None else torch.minimum(torch.maximum(error, below), above)  # the symbol the coder writes
    table = _table_bits(error, scale, below, above) if law == "laplace" else _mixed_table_bits(error, scale, below, above)
    bits = table + escape_bits(coded.abs(), scale, law)
    return bits if below is None else torch.where(below >= above, torch.zeros_like(bits), bits)


#: Bits of an escape's varint byte (:class:`medvae.residual.folding.Escapes`: LEB128, 7 bits of value a byte).
_VARINT_BYTE_BITS = 8.0


def table_width(scale: Tensor, law: str = "laplace") -> Tensor:
    """Half-width of the table the coder picks for ``scale``: that table's own (:func:`table_index`,
    :func:`medvae.residual.tables.tables`). A continuous ``16·ln 2·b − ½`` read a width one short
    for most tables (the tables stop at the first w with ``exp(−(w + ½)/b) < 2^-16``), and the
    loss then charged an escape byte the coder never writes: at the narrowest tables, near-losslessly,
    a pixel whose mean lies beyond its bound paid 8 bits for a symbol the coder codes in none."""
    return _table_widths(law).to(scale.device, scale.dtype)[table_index(torch.log2(scale.detach())).long()]


@lru_cache(maxsize=len(LAWS))
def _table_widths(law: str = "laplace") -> Tensor:
    return torch.tensor([-offset for offset in family_tables(law)[2]], dtype=torch.float32)


def escape_bits(magnitude: Tensor, scale: Tensor, law: str = "laplace") -> Tensor:
    """What a symbol of ``magnitude`` beyond its table costs on top of the escape's table
    entry (which the 2^-16 floor already counts): its varint, one byte up to 2^7 and one more
    per 7 bits of ``2·(|q| − w − 1)``. Smoothed so that the scale gets a gradient: the first
    byte is charged over one scale beyond the width, the later ones as 8/7 bits per doubling.
    Without it the loss caps a pixel at 16 bits and a model learns to narrow its scales and
    let outliers escape at a price it does not see (a wider model did, ``docs/lossless.md``)."""
    beyond = (magnitude - table_width(scale, law)).clamp(min=0.0)
    first_byte = _VARINT_BYTE_BITS * (beyond / scale).clamp(max=1.0)
    later_bytes = _VARINT_BYTE_BITS / 7 * torch.log2(1 + 2 * beyond / 128)
    return first_byte + later_bytes


def _table_bits(error: Tensor, scale: Tensor, below: Tensor | None, above: Tensor | None) -> Tensor:
    """−log2 of the (bounded) law's probability of ``error``, floored at 2^-16."""
    a = error.abs()
    inner = 1 - 0.5 * torch.exp(-(0.5 - a).clamp(min=0) / scale) - 0.5 * torch.exp(-(0.5 + a) / scale)
    outer_log = math.log(0.5) - (a - 0.5).clamp(min=0) / scale + torch.log(-torch.expm1(-1 / scale))
    log_p = torch.where(a < 0.5, torch.log(inner.clamp(min=2.0**-16)), outer_log)
    if below is not None:
        log_p = torch.where(error <= below, _log_cdf(below + 0.5, scale), log_p)
        log_p = torch.where(error >= above, _log_cdf(0.5 - above, scale), log_p)
    return -log_p.clamp(min=-16 * math.log(2)) / math.log(2)


#: The mixed law's parts (:func:`medvae.residual.tables._mixed_pmf`): the logistic's and the wide
#: Laplace's scales over the table's, and the Laplace's share.
_LOGISTIC_FACTOR = 2.0 ** float(LOGISTIC_OCTAVES)
_TAIL_FACTOR = 2.0 ** float(TAIL_OCTAVES)
_TAIL_SHARE = TAIL_WEIGHT / 2**TAIL_BITS


def _mixed_table_bits(error: Tensor, scale: Tensor, below: Tensor | None, above: Tensor | None) -> Tensor:
    """:func:`_table_bits` for the mixed law ``(1 − ε)·logistic(s) + ε·Laplace(w)``. The logistic's
    mass of the integer ``a = |error|`` is ``sinh(h)/(cosh(a/s) + cosh(h))``, ``h = 1/(2s)``, taken
    in logarithms (no difference of two near-equal CDFs); the Laplace's is :func:`_table_bits`'."""
    s, wide = scale * _LOGISTIC_FACTOR, scale * _TAIL_FACTOR
    a, h = error.abs(), 0.5 / s
    log_logistic = _log_sinh(h) - torch.logaddexp(_log_cosh(a / s), _log_cosh(h))
    log_laplace = -_table_bits(error, wide, None, None) * math.log(2)  # floored at 2^-16: its share is below that there anyway
    log_p = torch.logaddexp(math.log1p(-_TAIL_SHARE) + log_logistic, math.log(_TAIL_SHARE) + log_laplace)
    if below is not None:
        log_p = torch.where(error <= below, _mixed_log_cdf(below + 0.5, s, wide), log_p)
        log_p = torch.where(error >= above, _mixed_log_cdf(0.5 - above, s, wide), log_p)
    return -log_p.clamp(min=-16 * math.log(2)) / math.log(2)


def _mixed_log_cdf(t: Tensor, s: Tensor, wide: Tensor) -> Tensor:
    return torch.logaddexp(math.log1p(-_TAIL_SHARE) + F.logsigmoid(t / s), math.log(_TAIL_SHARE) + _log_cdf(t, wide))


def _log_cosh(x: Tensor) -> Tensor:
    x = x.abs()
    return x + torch.log1p(torch.exp(-2 * x)) - math.log(2)


def _log_sinh(x: Tensor) -> Tensor:  # x > 0
    return x + torch.log(-torch.expm1(-2 * x)) - math.log(2)


def _log_cdf(t: Tensor, scale: Tensor) -> Tensor:
    """log P(E ≤ t) for a continuous Laplace of ``scale`` (the discrete law's mass at or below t − ½)."""
    below_zero = math.log(0.5) + t.clamp(max=0) / scale
    return torch.where(t < 0, below_zero, torch.log1p(-0.5 * torch.exp(-t.clamp(min=0) / scale)))


def residual_bits(
    model: ResidualModel, image: Tensor, base: Tensor, lo: Tensor, hi: Tensor, previous: Tensor | None = None,
    max_error: Tensor | int = 0, law: str = "laplace",
) -> Tensor:
    """Bits of the residual of each image, as the four passes code it: (B,) float.

    ``image`` and ``base`` are (B, 1, H, W) float tensors of stored integers (H, W even);
    ``lo``, ``hi`` (B, 1, 1, 1) the base layer's intensity mapping, which bounds every pixel the
    base does not restore exactly (pixels outside it are exact: they cost nothing). The mean is
    rounded as the coder rounds it (straight-through), so the loss is the coder's cost, escapes included.
    ``previous``: the previous slices of each image's series (B, n, H, W), for a series model.
    ``max_error``: the error bound τ (an int, or one per image as (B, 1, 1, 1)); 0 is lossless.
    ``law``: the family of the laws (:data:`medvae.residual.tables.LAWS`).
    """
    return pass_bits(model, image, base, lo, hi, previous, max_error, law).sum(1)


def pass_bits(
    model: ResidualModel, image: Tensor, base: Tensor, lo: Tensor, hi: Tensor, previous: Tensor | None = None,
    max_error: Tensor | int = 0, law: str = "laplace",
) -> Tensor:
    """:func:`residual_bits` pass by pass: (B, 4), in the order of :data:`PHASES` (where the
    bits go: the first pass sees no decoded neighbour, the last sees eight)."""
    laws = pass_laws(model, image, base, lo, hi, previous, max_error, law)
    return torch.stack([symbol_bits(*symbols, law=law).flatten(1).sum(1) for symbols in laws], 1)


def pass_laws(
    model: ResidualModel, image: Tensor, base: Tensor, lo: Tensor, hi: Tensor, previous: Tensor | None = None,
    max_error: Tensor | int = 0, law: str = "laplace",
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """For each pass in the order of :data:`PHASES`: the (B, 1, H/2, W/2) symbols its pixels
    are coded as (the error around the rounded mean, in units of 2τ + 1, rounded as the coder
    rounds it; straight-through), the Laplace scales of those symbols, and the symbols of each
    pixel's lower and upper bound (equal where the pixel is exact): what :func:`symbol_bits`
    takes. Later passes read the residuals as the decoder has them (within τ of the true ones),
    and a model that reads the bounds reads τ (every pixel's) beside them."""
    residual = image - base
    blocks = F.pixel_unshuffle(residual, 2)
    exact = F.pixel_unshuffle(((image < lo) | (image > hi)).to(image.dtype), 2) > 0
    low, high = (F.pixel_unshuffle(bound - base, 2) for bound in (lo.expand_as(base), hi.expand_as(base)))
    tau = torch.as_tensor(max_error, dtype=image.dtype, device=image.device).reshape(-1, 1, 1, 1)
    step = 2 * tau + 1
    near_lossless = bool((tau > 0).any())
    decoded = [torch.zeros_like(blocks[:, :1])] * 4  # per block offset
    bound = tau.expand_as(residual) if model.bounds else None  # every pixel's
    known = torch.zeros_like(residual, dtype=torch.bool)
    span = hi - lo
    for phase in PHASES:
        k = block_offset(phase)
        out = model(model_inputs(base, F.pixel_shuffle(torch.cat(decoded, 1), 2), known, lo, hi, previous, bound))
        mean = out[:, 2 * k : 2 * k + 1] * span / CONTEXT_GAIN
        mean = mean + (torch.round(mean) - mean).detach()
        scale = torch.exp2((out[:, 2 * k + 1 : 2 * k + 2] + torch.log2(span / step)).clamp(min=-5.0, max=14.0))  # the symbols' (the coder's table range)
        error, pixel, lowest, highest = blocks[:, k : k + 1] - mean, blocks[:, k : k + 1], low[:, k : k + 1], high[:, k : k + 1]
        symbol = _rounded(error / step, torch.sign(error) * torch.floor((error.abs() + tau) / step))
        at_exact = exact[:, k : k + 1]
        below = torch.where(at_exact, symbol, _rounded((lowest - mean) / step, torch.floor((lowest - mean) / step)))
        above = torch.where(at_exact, symbol, _rounded((highest - mean) / step, torch.ceil((highest - mean) / step)))
        if near_lossless:  # losslessly a pixel has one symbol: nothing to move
            symbol = _to_bounds(symbol, scale, below, above, pixel, lowest, highest, tau, law)
        yield symbol, scale, below, above
        decoded[k] = torch.where(at_exact, pixel, torch.minimum(torch.maximum(mean + step * symbol, lowest), highest)).detach()
        known = known | phase_mask(residual.shape, phase, residual.device)


def _to_bounds(
    symbol: Tensor, scale: Tensor, below: Tensor, above: Tensor, residual: Tensor, lowest: Tensor, highest: Tensor, tau: Tensor,
    law: str = "laplace",
) -> Tensor:
    """The symbols the encoder codes (:func:`medvae.residual.folding.cheapest`): a pixel within τ
    of a bound takes that bound's symbol (it decodes to the bound) where that costs fewer bits."""
    with torch.no_grad():
        bits = symbol_bits(symbol, scale, below, above, law)
        moved = torch.zeros_like(symbol, dtype=torch.bool), torch.zeros_like(symbol, dtype=torch.bool)
        for i, (bound_symbol, bound) in enumerate(((below, lowest), (above, highest))):
            candidate = symbol_bits(bound_symbol, scale, below, above, law)
            moved[i][...] = ((residual - bound).abs() <= tau) & (candidate < bits)
            bits = torch.where(moved[i], candidate, bits)
    return torch.where(moved[1], above, torch.where(moved[0], below, symbol))


def _rounded(value: Tensor, rounded: Tensor) -> Tensor:
    """``rounded`` forward, ``value``'s gradient backward (straight-through)."""
    return value + (rounded - value).detach()
