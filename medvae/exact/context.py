"""The exact coding path of ``medvae-ctx``: two checkerboard passes over y, each in bands of rows.

Why every decoder computes the same probabilities (the argument, in three sentences):
the means and scales of a pass are exact functions (:mod:`medvae.exact.fixed`) of the
hyper-decoder's features and, for the second pass, of the anchors' ``ŷ`` only, because
the context convolution's taps that could read a non-anchor are zero in the integer
weights themselves; the anchors' ``ŷ = symbol + mean`` is rounded to fixed point by one
IEEE operation, so it is the same integer on every machine. Each table index is then an
exact comparison of an exact scale with the stored scale table, and each symbol is the
rounded difference from an exact mean, so encoder and decoder form the same rANS
tables and the same ``ŷ``, pass after pass and band after band. The order in which bands
are computed, and whether the second pass has already written some non-anchors, cannot
change a result: nothing the coder uses reads a value the decoder does not yet have.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from medvae.errors import BitstreamError
from medvae.exact.fixed import DTYPE, Stored, pow2, scale_round
from medvae.exact.layers import LocalOutput, TiledOutput
from medvae.exact.twin import CHUNK, ExactTwin, _tables, band_rows, guarded
from medvae.prediction import UNIT_STEP


class CheckerboardTwin(ExactTwin):
    """:class:`~medvae.exact.twin.ExactTwin` for ``medvae-ctx``: y coded with means, anchors
    first (``(row + column)`` even), then the rest with the anchors' context."""

    y_passes = 2

    def _bands(self, shape: tuple[int, ...], chunk: int | None) -> Iterator[tuple[int, int, int]]:
        """``(pass, r0, r1)`` of each y string, in coding order (anchors' bands, then the rest's)."""
        h, rows = shape[-2], band_rows(shape, chunk)
        for parity in (0, 1):
            for r0 in range(0, max(h, 1), rows):
                yield parity, r0, min(h, r0 + rows)

    def _pass_parameters(
        self, features: LocalOutput, context: LocalOutput | None, r0: int, r1: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """Table indexes (int32, CPU) and means (real, float64) of y's rows ``r0:r1``."""
        ctx = None if context is None else context.crop(r0, r1, 0, width)
        scales, means = self.family.parameters_from(self, features.crop(r0, r1, 0, width), ctx)
        return self._indexes(scales), means.real()

    def _code(self, features: LocalOutput, shape: tuple[int, ...], chunk: int | None, step) -> Stored:
        """Run both passes over y; ``step(parity_mask, r0, r1, indexes, means)`` codes (or decodes)
        one band and returns its symbols (C, n) at the mask. Returns ŷ (int32, at the
        conditional's fractional bits), written pass by pass."""
        w = shape[-1]
        y_hat = Stored(torch.zeros(shape, dtype=torch.int32, device=self.device), self.conditional_frac)
        unit = pow2(self.conditional_frac)
        context = None
        for parity, r0, r1 in self._bands(shape, chunk):
            if parity and context is None:
                context = self.context_model(y_hat)  # read lazily, band by band, from the anchors
            indexes, means = self._pass_parameters(features, context, r0, r1, w)
            rows = torch.arange(r0, r1)[:, None] + torch.arange(w)[None, :]
            mask = (rows % 2 == parity).to(means.device)
            symbols = step(mask.cpu(), r0, r1, indexes[0], means[0]).to(means.device, DTYPE)
            values = scale_round(symbols + means[0][:, mask], unit)
            y_hat.values[0, :, r0:r1][:, mask] = values.to(torch.int32)
        return y_hat

    def encode(self, latents: list[Stored | Tensor], step: int = UNIT_STEP) -> tuple[list[bytes], TiledOutput]:
        if step != UNIT_STEP:
            raise ValueError("the checkerboard context codes y at the unit step (a coarser one is for series bases)")
        y, z = latents
        latents.clear()
        conditional = self._coders[1]
        z_symbols = self._symbols(z, self.medians)
        z_strings = self._bottleneck_strings(z_symbols)
        features = self.family.hyper_decode(self, self._bottleneck_value(z_symbols))
        shape, tables, strings = (1, self.y_channels, *y.shape[-2:]), _tables(conditional), []

        def step(mask: Tensor, r0: int, r1: int, indexes: Tensor, means: Tensor) -> Tensor:
            band = y.crop(r0, r1, 0, shape[-1]).real() if isinstance(y, Stored) else y[..., r0:r1, :].to(means.device, DTYPE)
            symbols = torch.round(band[0] - means)[:, mask.to(means.device)]
            strings.append(conditional.entropy_coder.encode_with_indexes(
                symbols.to(torch.int32).reshape(-1).tolist(), indexes[:, mask].reshape(-1).tolist(), *tables))
            return symbols

        y_hat = self._code(features, shape, self.chunk, step)
        return strings + z_strings, self.family.synthesize(self, y_hat, features)

    def decode(
        self, strings: list[bytes], shape: tuple[int, int], chunk: int | None = CHUNK, predicted: None = None, step: int = UNIT_STEP
    ) -> TiledOutput:
        if predicted is not None or step != UNIT_STEP:
            raise BitstreamError("corrupted bitstream: medvae-ctx files carry no base prediction or step")
        if chunk is None:
            raise BitstreamError("corrupted bitstream: medvae-ctx files are coded in bands (format 3 and later)")
        conditional = self._coders[1]
        y_strings, z_strings = self._split(strings, shape, chunk)
        features = self.family.hyper_decode(self, self._bottleneck_value(self._bottleneck_symbols(z_strings, shape, chunk)))
        y_shape, tables, pending = (1, self.y_channels, 4 * shape[0], 4 * shape[1]), _tables(conditional), iter(y_strings)

        def step(mask: Tensor, r0: int, r1: int, indexes: Tensor, means: Tensor) -> Tensor:
            band = indexes[:, mask].reshape(-1).tolist()
            values = conditional.entropy_coder.decode_with_indexes(guarded(next(pending), len(band)), band, *tables)
            return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape[0], -1)

        return self.family.synthesize(self, self._code(features, y_shape, chunk, step), features)
