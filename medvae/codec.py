"""The one coding path: integer image → normalized, padded tensor → model → container bytes.

The Python API, the command line, the tests and ``evaluate.py`` all go through
:class:`Codec`, so what is measured is what users get.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from compressai.models import CompressionModel
from tqdm import tqdm

from medvae import bitstream, correction, metrics, prediction, zoo
from medvae.allocator import keep_freed_memory
from medvae.checkpoint import exact_fingerprint, fingerprint, load_model
from medvae.errors import BitstreamError, InputError, KeptFileError
from medvae.exact import calibrate, exact_twin
from medvae.exact.fixed import Stored
from medvae.exact.image import NormalizedImage, pixel_rows, pixels
from medvae.exceptions import Exceptions
from medvae.exceptions import find as find_exceptions
from medvae.intensity import check_image, default_value_range, denormalize
from medvae.models.gain import LOWEST_QUALITY, QUALITY_UNITS, quality_units
from medvae.refine import check_refinement, refine_latents
from medvae.residual.coder import PassOutputs, check_max_error, pass_bounds
from medvae.residual.weights import Residual, load_residual
from medvae.workers import Call, run_graph, worker_count
from medvae.series import (
    CHAIN, Neighbours, StepSearch, as_slices, can_follow, choice_of, coding_plan, previous_planes, read_by_those_to_code, slice_key,
    slices_wanted,
)

#: Torch threads of the format-1 float decoder. Its entropy decoder depends on float
#: results that change with the thread count, so format-1 files decode with the count
#: they were written with. Format 2 is exact and uses the caller's threads.
FORMAT1_THREADS = 1


class LegacyFormatWarning(UserWarning):
    """A format-1 file: decoded with the float path of the release that wrote it, whose
    pixels can differ on other machines. Re-encode it to get format 2."""


@contextmanager
def fixed_threads(n: int = FORMAT1_THREADS) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Encoded(NamedTuple):
    strings: list[bytes]
    decoded: np.ndarray | None  # the pixels every decoder gets (None: only their checksum was kept)
    pixels_crc: int  # bitstream.pixels_crc of those pixels
    squared_error: float  # their summed squared error against the input (variable-rate models; else 0)
    value_range: tuple[int, int]
    exceptions: Exceptions  # padding and extremes, stored exactly
    x: NormalizedImage  # the model's input: the image in [0, 1], padded to the stride
    correction: bytes = b""  # the correction block the decoder applies (medvae.correction), if any
    prediction: bytes = b""  # the base prediction block (medvae.prediction), if y was coded against one
    step: int = bitstream.UNIT_STEP  # y's quantization step, in quarters (medvae.prediction; the field above hides the module)


class BaseLayer(NamedTuple):
    """An image's lossy base (:meth:`Codec.base_layer`), what its residual layer is coded against."""

    pixels: np.ndarray  # the pixels every decoder gets
    value_range: tuple[int, int]  # the intensity mapping: every other pixel lies in it
    exact: np.ndarray | None  # bool mask of the pixels the base restores exactly (padding, extremes), or None


class QualityCoder(NamedTuple):
    """One image's files at any quality (:meth:`Codec.quality_coder`).

    ``write(quality)``: the file and the pixels it decodes to. ``size(quality)``: the length of
    that file, without running the synthesis transform (most of a coding's time): the header's
    fields that depend on the decoded pixels (their CRC-32, the PSNR, the correction block of
    :mod:`medvae.correction`, present or not by the image's size) have a fixed width, so the
    length is that of the strings and of what the image alone sets. Rate control needs only
    sizes to search for a ratio or bpp target.
    """

    write: Callable[[float], tuple[bytes, np.ndarray]]
    size: Callable[[float], int]


class BoundedCoder(NamedTuple):
    """One image's near-lossless files on one coding of its lossy base (:meth:`Codec.bounded_coder`).

    ``write(max_error, tighter_passes)``: the file and the pixels it decodes to. ``base(max_error)``:
    the pixels of the base the file of that bound builds on, which every decoder gets before the
    residual layer (rate control predicts from them which bound meets a PSNR); coded when first
    asked for, once per step of y (:func:`medvae.prediction.base_step`), and shared with ``write``.
    """

    write: Callable[[int, int], tuple[bytes, np.ndarray]]
    base: Callable[[int], np.ndarray]


class Codec:
    """Compresses 2-D integer images to bytes and back with one model's weights.

    Args:
        model: a registered MedVAE model (see :mod:`medvae.models`). It is put in
            eval mode on ``device``. Its entropy tables and exact plan
            (:mod:`medvae.exact`) are computed if missing; pass ``update_tables=True``
            after changing the weights yourself.
        device: where the transforms run (``"cpu"``, ``"cuda"``). Any device decodes
            any file to the same pixels.
        residual: the residual model of lossless and near-lossless coding, if any.
        series_residual: the residual model that also reads the previous slice of a series
            (:meth:`compress` with ``previous``, :meth:`compress_series`), if any.
        quality: a variable-rate model's quality when :meth:`compress` is given none
            (default :data:`~medvae.models.variable_rate.DEFAULT_QUALITY`, or the top level of
            a model with fewer levels).
        alternatives: codecs of other weights of the same variable-rate family and levels
            (the shipped ``"alternatives"``, :func:`load`). Lossy coding then codes the image
            with each and keeps the file of lowest rate–distortion cost (:meth:`compress`);
            decoding goes to the weights a file names.
        correction: variable-rate weights only: let the encoder fit, and the file carry, a
            correction of the reconstruction that every decoder applies exactly
            (:mod:`medvae.correction`; 82 bytes for a sizeable gain in fidelity). Decoding
            follows the file either way.
        adaptation: lossless and near-lossless files: let the encoder fit, and the file carry
            where it saves bytes, a per-image adaptation of the residual laws that every decoder
            applies exactly (:mod:`medvae.residual.adaptation`, formats 15 to 17). Off: formats
            8 to 10, as before. Decoding follows the file either way.
        base_prediction: a slice coded given the previous one of its series (``previous``): code
            its base latent against the analysis of that slice where it pays
            (:mod:`medvae.prediction`, formats 21 to 26). Off: formats 9, 10, 16, 17, 19 and 20,
            as before. Decoding follows the file either way.
        noise_step: a slice with a residual layer: quantize its base latent with the step the
            image's noise calls for where that is coarser than the unit (a slice coded alone:
            formats 27 to 29) or than a series slice's step (:func:`medvae.prediction.noise_step`).
            Off: formats 8, 15 and 18 for a slice alone, a series slice at its bound's step, as
            before. Decoding follows the file either way.

    Coding runs in the exact arithmetic of :mod:`medvae.exact`: the bytes written and
    the pixels decoded are the same on every CPU, at any torch thread count, and on
    GPU. Every file carries a CRC of its decoded pixels, which decoding checks.
    """

    def __init__(
        self, model: CompressionModel, *, device: str | torch.device = "cpu", update_tables: bool = False,
        residual: Residual | None = None, quality: float | None = None, alternatives: Sequence[Codec] = (),
        series_residual: Residual | None = None, correction: bool = True, adaptation: bool = True,
        base_prediction: bool = True, noise_step: bool = True,
    ):
        if not hasattr(model, "model_name"):
            raise TypeError("Codec needs a registered MedVAE model (medvae.models.create(...))")
        keep_freed_memory()  # coding reuses its freed buffers instead of page-faulting new ones
        self.model = model.eval().to(device)
        self.model.update(force=update_tables)
        if update_tables or getattr(model, "exact_plan", None) is None:
            model.exact_plan = calibrate(model)
        self.device = torch.device(device)
        self.twin = exact_twin(model, model.exact_plan).to(self.device)
        #: A progressive model (rnn-conv) codes a number of iterations, each adding bits.
        self.progressive = getattr(self.twin, "progressive", False)
        #: The weights format-2 files written here name (state dict and exact plan).
        self.fingerprint = exact_fingerprint(model, model.exact_plan)
        #: The weights format-1 files name (state dict only).
        self.format1_fingerprint = fingerprint(self.model)
        #: λ of the MSE loss the weights were trained with, when their file records it (None if not).
        self.lmbda: float | None = getattr(model, "trained_lmbda", None)
        #: The residual model of lossless and near-lossless coding (``max_error``), trained on
        #: this base's reconstructions; None when the weights come without one.
        self.residual = residual
        #: The series residual model (lossless and near-lossless coding given the previous
        #: slice of a series), trained on this base's reconstructions; None when there is none.
        self.series_residual = series_residual
        if series_residual is not None and not series_residual.model.previous:
            raise InputError("series_residual must be a residual model that reads the previous slice")
        #: A variable-rate model (``medvae-vr``) codes any quality in :attr:`quality_range`.
        self.variable_rate = hasattr(model, "gain")
        self.default_quality = model.default_quality if quality is None and self.variable_rate else quality
        self._set_quality(quality)  # checks it
        #: Other weights of this family the lossy encoder chooses from per image (see ``alternatives``).
        self.alternatives = tuple(alternatives)
        #: Whether lossy files of variable-rate weights carry a correction of the reconstruction
        #: (:mod:`medvae.correction`, format 11; images of fewer than
        #: :data:`~medvae.correction.MIN_PIXELS` pixels never do). Off: format 6, as before.
        self.correction = correction
        #: Whether residual layers carry the per-image adaptation of their laws where it pays
        #: (:mod:`medvae.residual.adaptation`, formats 15 to 17). Off: formats 8 to 10, as before.
        self.adaptation = adaptation
        #: Whether a series slice's base latent is coded against the previous slice's where it pays
        #: (:mod:`medvae.prediction`; hyperprior weights coded in one pass over y).
        self.base_prediction = base_prediction and self._predicts
        #: Whether a residual file's base latent takes the coarser step its image's noise calls for
        #: (:func:`medvae.prediction.noise_step`; the same weights as above).
        self.noise_step = noise_step and self._predicts
        for other in self.alternatives:
            if not (self.variable_rate and other.variable_rate and other.name == self.name and other.model.config["lmbdas"] == self.model.config["lmbdas"]):
                raise InputError(f"alternative weights must be variable-rate {self.name} weights with the same levels")

    @property
    def _predicts(self) -> bool:
        """Whether these weights' base latent can be coded against a prediction (:mod:`medvae.prediction`):
        hyperprior weights coded in one pass over y."""
        return getattr(self.twin, "hyperprior", False) and getattr(self.twin, "y_passes", 0) == 1

    @property
    def quality_range(self) -> tuple[float, float] | None:
        """Lowest and highest quality a variable-rate model codes (multiples of 1/256 between
        them); None for weights trained for one rate."""
        return (float(LOWEST_QUALITY), float(self.model.levels)) if self.variable_rate else None

    def _set_quality(self, quality: float | None, geometric: bool = True) -> float | None:
        """Make the model and its exact twin code at ``quality`` (a variable-rate model's
        default when None), mixing the gains of two levels geometrically (linearly for
        format-5 files); returns the quality set, None for single-rate weights."""
        if not self.variable_rate:
            if quality is not None:
                raise InputError(f"quality= is for variable-rate models (medvae-vr); these {self.name} weights code one rate")
            return None
        value = self.default_quality if quality is None else quality
        units = quality_units(value, self.model.levels)  # checks the range
        if not geometric and units < QUALITY_UNITS:
            raise InputError("format-5 files (a linear mix of the gains) have no quality below 1")
        gains = (self.model.gain, self.model.inverse_gain, self.twin.gain, self.twin.inverse_gain)
        before = [(unit.units, unit.geometric) for unit in gains]
        for unit in gains:
            unit.units, unit.geometric = units, geometric
        try:  # an extrapolated quality's exact vectors, checked now rather than mid-coding
            self.twin.gain.vector(), self.twin.inverse_gain.vector()
        except ValueError as exc:
            for unit, (old_units, old_geometric) in zip(gains, before):
                unit.units, unit.geometric = old_units, old_geometric
            raise InputError(f"quality {value:g} has no exact form with these weights: {exc}") from None
        self.lmbda = self.model.lmbda_at(self.model.quality)
        return self.model.quality

    @property
    def name(self) -> str:
        """Registered family name of the model, e.g. ``"medvae"``."""
        return self.model.model_name

    def _prepare(
        self, image: np.ndarray, value_range: tuple[int, int] | None, exceptions: Exceptions | None = None
    ) -> tuple[np.ndarray, tuple[int, int], NormalizedImage]:
        """(image, value range, the image in [0, 1] padded to the stride, normalized as tiles
        read it). With ``exceptions`` (:func:`medvae.exceptions.find`) the model codes the
        image they leave, over their ``value_range``."""
        image = check_image(image)
        if exceptions:
            value_range = exceptions.value_range
        lo, hi = default_value_range(image) if value_range is None else map(int, value_range)
        if hi <= lo:
            raise InputError(f"empty value range [{lo}, {hi}]")
        if not exceptions and (image.min() < lo or image.max() > hi):
            raise InputError(f"image values [{image.min()}, {image.max()}] fall outside value_range [{lo}, {hi}]")
        return image, (lo, hi), NormalizedImage(image, lo, hi, self.model.downsampling_factor, exceptions=exceptions)

    def _model_input(
        self, image: np.ndarray, value_range: tuple[int, int] | None, padding_value: int | None
    ) -> tuple[Exceptions, tuple[int, int], NormalizedImage]:
        """What the model codes: the padding and extremes stored apart (none with an explicit
        ``value_range``), the value range, and the normalized image (:meth:`_prepare`)."""
        exceptions = find_exceptions(image, padding_value) if value_range is None else Exceptions()
        _, value_range, x = self._prepare(image, value_range, exceptions)
        return exceptions, value_range, x

    def _encode(
        self, image: np.ndarray, value_range: tuple[int, int] | None, refine_steps: int = 0,
        lmbda: float | None = None, padding_value: int | None = None, keep_pixels: bool = True,
        iterations: int | None = None, transformed: Stored | None = None, synthesize: bool = True,
        predict_from: np.ndarray | None = None, base_step: int = prediction.UNIT_STEP, noise_step: bool = False,
        coarser_step: int = 0,
    ) -> _Encoded:
        """The strings, the pixels every decoder will get (or, without ``keep_pixels``, only
        their checksum, computed band by band: an image-sized array less), and what went
        into them. ``transformed``: this image's ``g_a`` output, already computed
        (:meth:`quality_coder`). Without ``synthesize``, the strings alone: no pixels, no
        checksum, no error (:attr:`QualityCoder.size`)."""
        return self._encodings(image, value_range, refine_steps, lmbda, padding_value, keep_pixels, iterations, transformed=transformed,
                               synthesize=synthesize, predict_from=predict_from, base_step=base_step, noise_step=noise_step,
                               coarser_step=coarser_step)[-1]

    def _encodings(
        self, image: np.ndarray, value_range: tuple[int, int] | None, refine_steps: int = 0,
        lmbda: float | None = None, padding_value: int | None = None, keep_pixels: bool = True,
        iterations: int | None = None, every_iteration: bool = False, transformed: Stored | None = None,
        synthesize: bool = True, predict_from: np.ndarray | None = None, base_step: int = prediction.UNIT_STEP,
        noise_step: bool = False, coarser_step: int = 0,
    ) -> list[_Encoded]:
        """:meth:`_encode`'s result; for a progressive model with ``every_iteration``, one per
        iteration count from 1 to ``iterations`` (the encoder is causal: the first k
        iterations of a longer run are the k-iteration file). ``predict_from``: the previous
        slice of a series as decoded, to code y against (:mod:`medvae.prediction`), y quantized with
        ``base_step`` (in quarters), or with ``noise_step`` the coarser step the image's noise calls
        for (:func:`medvae.prediction.noise_step`), if coarser; then ``coarser_step`` quarters coarser
        (at most :data:`medvae.bitstream.STEPS`' last)."""
        image = check_image(image)
        exceptions, value_range, x = self._model_input(image, value_range, padding_value)
        base_step = min(prediction.rule_step(base_step, image, value_range, noise_step) + coarser_step, bitstream.STEPS[-1])
        encodings, predicted_block = [], b""
        with torch.inference_mode():
            if self.progressive:
                outputs = self.twin.iterate(x, self._iterations(iterations))
                outputs = outputs if every_iteration else outputs[-1:]
            else:
                if refine_steps:
                    x_float = x.tensor().float().to(self.device)
                    latents = refine_latents(self.model, x_float, self._refine_lmbda(lmbda), steps=refine_steps, size=image.shape)
                elif transformed is not None:
                    latents = self.twin.latents_from(transformed)
                else:
                    latents = self.twin.analyze(x)
                if predict_from is not None:
                    predicted = self.twin.predicted_symbols(prediction_input(predict_from, value_range, x.stride), base_step)
                    strings, x_hat, predicted_block = self.twin.encode_predicted(latents, predicted, base_step)
                    outputs = [(strings, x_hat)]
                else:
                    outputs = [self.twin.encode(latents, base_step)]
            for strings, x_hat in outputs:
                if not synthesize:
                    encodings.append(_Encoded(strings, None, 0, 0.0, value_range, exceptions, x, prediction=predicted_block, step=base_step))
                    continue
                crc, error, decoded = 0, 0.0, np.empty(image.shape, image.dtype) if keep_pixels else None
                block, bands = b"", pixel_rows(x_hat, image.shape, value_range, image.dtype)
                if self._corrects(image.shape):  # the whole reconstruction, to fit and correct it
                    reconstruction = pixels(x_hat, image.shape, value_range, image.dtype)
                    block = correction.fit(image, reconstruction, value_range, exceptions.exact(image.shape))
                    bands = [(0, correction.apply(reconstruction, value_range, block))]
                for first, band in bands:
                    band = exceptions.restore(band, first)
                    crc = bitstream.pixels_crc(band, crc)
                    if self.variable_rate:  # its files record their PSNR
                        error += float(np.square(band.astype(np.float64) - image[first : first + band.shape[0]]).sum())
                    if decoded is not None:
                        decoded[first : first + band.shape[0]] = band
                encodings.append(_Encoded(strings, decoded, crc, error, value_range, exceptions, x, block, predicted_block, base_step))
        return encodings

    def _corrects(self, shape: tuple[int, int]) -> bool:
        """Whether a lossy file of an image of this shape carries a correction block (known before
        its pixels are, so :meth:`quality_coder`'s sizes are exact)."""
        return self.variable_rate and self.correction and correction.applies(shape)

    def base_layer(
        self, image: np.ndarray, padding_value: int | None = None, base_step: int = prediction.UNIT_STEP, noise_step: bool = False,
    ) -> BaseLayer:
        """What the residual layer of lossless and near-lossless coding builds on: the pixels
        every decoder gets from this image's lossy coding, the intensity mapping used, and
        where the base restores the image exactly (:class:`BaseLayer`). ``base_step``: y's
        quantization step, in quarters (a predicted series slice's: :func:`medvae.prediction.base_step`;
        the pixels are those of such a file, with or without the prediction); ``noise_step``: the
        coarser of it and the step the image's noise calls for, as a slice coded alone takes."""
        encoded = self._encode(image, None, padding_value=padding_value, base_step=base_step, noise_step=noise_step)
        return BaseLayer(encoded.decoded, encoded.value_range, encoded.exceptions.exact(image.shape))

    def compress(
        self,
        image: np.ndarray,
        *,
        value_range: tuple[int, int] | None = None,
        bits_stored: int = 0,
        metadata: bytes = b"",
        refine_steps: int = 0,
        lmbda: float | None = None,
        padding_value: int | None = None,
        max_error: int | None = None,
        iterations: int | None = None,
        quality: float | None = None,
        tighter_passes: int = 0,
        previous: np.ndarray | None = None,
        optimize: bool = False,
        coarser_step: int = 0,
    ) -> bytes:
        """Encode a 2-D uint8/uint16/int16 image to a self-describing ``.mvae`` container.

        Args:
            image: the stored integers (any size; padded to the model stride internally).
            value_range: (lo, hi) mapped to [0, 1]; default: the min and max of the image
                without its padding and isolated extremes, which are then stored exactly
                (:mod:`medvae.exceptions`). An explicit range codes every pixel with the model.
            bits_stored: the DICOM Bits Stored, recorded for metrics (0 = unknown).
            metadata: opaque bytes stored in the container (e.g. the source DICOM header).
            refine_steps: fit the latents to this image with that many gradient steps
                before coding (:mod:`medvae.refine`): a much slower encoder, higher
                fidelity at about the same size, the same decoder. Refinement is a
                float search, so its bytes may differ between machines; the file then
                decodes to the same pixels everywhere, like any other.
            lmbda: the rate–distortion trade-off refinement aims at; default: the λ
                the weights were trained with (:attr:`lmbda`).
            padding_value: the scanner's padding value (DICOM Pixel Padding Value); when
                None, out-of-field padding is detected from the image.
            max_error: add a residual layer (:mod:`medvae.residual`) so that every decoded
                pixel is within ``max_error`` of the input: 0 is lossless (the decoded
                integers equal the input), τ ≥ 1 near-lossless. None: the lossy base alone.
            tighter_passes: near-lossless only: code the first 1 to 3 of the residual layer's
                four passes with the bound ``max_error − 1`` (a rate between those of the two
                bounds; rate control's fine steps). The file declares ``max_error``.
            optimize: near-lossless only: optimized quantization (:mod:`medvae.residual.coder`):
                each symbol chosen for the fewest bits plus squared error, and reconstructed
                toward its law's mean, about 10 % fewer bits at the same PSNR, but ``max_error``
                then sets the quantizer's step (2τ + 1), not a bound: the file declares the
                largest error of its pixels, measured (at most 3τ + 1 plus the offset). Rate
                control's targets use it.
            iterations: for a progressive model (``rnn-conv``), how many iterations to code
                (1 to its ``max_iterations``, the default); each adds bits and fidelity.
            previous: with ``max_error``: the previous slice of this image's series, as its file
                decodes, or the slices before it back to its series' last key slice, nearest
                first (:meth:`compress_series` keeps track). The residual layer is then coded
                with :attr:`series_residual`, which reads that slice (and the one before it, for
                a model that reads two: where only one is given, it reads it twice): fewer bits
                on a volume's consecutive slices, but the file decodes only given those slices
                (``decompress(data, previous=…)``; it records their checksums).
            coarser_step: with ``max_error``: quantize the base latent y this many quarters of
                its unit step coarser than the encoder's rule (:func:`medvae.prediction.base_step`
                for a series slice, :func:`~medvae.prediction.noise_step` for one coded alone),
                at most 4 units; the file records the step. :meth:`compress_series` tries it on
                the first slice of each chain, and keeps the smaller file.
            quality: for a variable-rate model (``medvae-vr``), any number in
                :attr:`quality_range` (multiples of 1/256; default 5): higher codes more bits
                and fidelity. The file records it, and the PSNR it achieves. Default:
                :attr:`default_quality`.

        With :attr:`alternatives` (the shipped ``medvae-ctx`` has one), lossy coding codes the
        image with each weights and keeps the file of lowest rate–distortion cost, at the cost
        of one encoding per weights; the file names the weights that wrote it.
        """
        return self._compress(
            image, value_range=value_range, bits_stored=bits_stored, metadata=metadata, refine_steps=refine_steps,
            lmbda=lmbda, padding_value=padding_value, max_error=max_error, iterations=iterations, quality=quality,
            tighter_passes=tighter_passes, previous=previous, optimize=optimize, coarser_step=coarser_step,
        )[0]

    def compress_series(
        self, images: Sequence[np.ndarray], *, max_error: int, max_chain: int = CHAIN, progress: bool = False,
        workers: int | None = None, step_search: bool = True, slice_options: Sequence[Mapping[str, Any]] | None = None,
        written: Callable[[int, bytes], None] | None = None, kept: Mapping[int, bytes] | None = None, **options,
    ) -> list[bytes]:
        """The files of a series' consecutive slices (a volume's, in order), lossless or
        near-lossless (``max_error``; other ``options`` as for :meth:`compress`), one per slice in
        slice order. Key slices, coded alone, sit in the middle of runs of ``2·max_chain + 1``
        slices; every other slice is coded given its neighbour towards the key slice as it
        decodes (:meth:`compress` with ``previous``), so a slice decodes after at most
        ``max_chain`` others (0: every slice alone; :func:`medvae.series.coding_plan`). A slice of
        another shape or dtype than the one before starts a new run. ``step_search``: code each
        chain's first slice with two steps of y and keep the smaller file, the step the rest of
        the chain takes (:class:`medvae.series.StepSearch`; off: one coding per slice, about 15 %
        faster, files up to 0.4 % larger). Independent
        chains of slices are coded at once in ``workers`` processes (default: one per torch
        thread; :mod:`medvae.workers`), which changes no byte. ``slice_options``: one mapping per
        slice of options for that slice alone (its ``metadata``, its ``padding_value``), over
        ``options``; ``written(k, data)``, when given, gets each slice's file as soon as it is
        chosen, in coding order (``medvae compress --series`` writes it out then, so an interrupted
        run keeps what it coded). ``kept``: files an earlier run of the same call wrote for some
        slices (by index; an interrupted run's, ``medvae compress --skip-existing``): they are
        returned as given, not handed to ``written``, and each one a slice to code reads is
        decoded, given the slices it read, with its chain's step read back from it, so the other
        slices get the files an uninterrupted run writes. :meth:`decompress_series` decodes them."""
        if slice_options is not None and len(slice_options) != len(images):
            raise InputError(f"slice_options holds {len(slice_options)} mappings for {len(images)} slices")
        if "key_every" in options:  # the parameter this replaced
            raise InputError("key_every is now max_chain: a slice decodes after at most max_chain others, with a key "
                             "slice in the middle of every 2·max_chain + 1 (key_every=K bounded the chain at K − 1)")
        kept = dict(kept or {})
        if any(k not in range(len(images)) or not isinstance(data, bytes) for k, data in kept.items()):
            raise InputError(f"kept maps slice indexes from 0 to {len(images) - 1} to the bytes of their files")
        follows = [i > 0 and can_follow(images[i], images[i - 1]) for i in range(len(images))]
        plan = coding_plan(len(images), max_chain, follows)
        reference_of = dict(plan)
        handled = read_by_those_to_code(plan, kept)  # the slices to code, and the kept files they read
        plan = [(k, reference) for k, reference in plan if k in handled]
        search = StepSearch(plan, step_search and self.base_prediction)
        neighbours, files = Neighbours(plan), [kept.get(k, b"") for k in range(len(images))]
        after = collections.defaultdict(list)  # slice: the slices coded (or kept files decoded) given it
        for k, reference in plan:
            after[reference].append(k)
        keys = after[None]
        chains = sum(1 if k in kept else len(search.candidates(k)) for k, reference in plan if reference in keys)
        width = max(len(keys), chains)  # codings that may run at once: the key slices, then the chains' first slices
        reads: dict[int, list[np.ndarray] | None] = {}

        def tasks(k: int) -> list[tuple[int, int | None]]:  # (slice, coarser_step; None: decode its kept file)
            reads[k] = neighbours.given(reference_of[k])
            return [(k, None)] if k in kept else [(k, coarser) for coarser in search.candidates(k)]

        def call(task: tuple[int, int | None]) -> Call:
            k, coarser = task
            if coarser is None:
                return "kept_pixels", (k, images[k], kept[k]), {"previous": reads[k]}
            own = slice_options[k] if slice_options is not None else {}
            return "compress_with_pixels", (images[k],), {**options, **own, "max_error": max_error, "previous": reads[k], "coarser_step": coarser}

        with tqdm(total=len(plan), desc="series", unit="slice", disable=not progress) as bar:
            def done(task: tuple[int, int | None], result) -> list[tuple[int, int | None]]:
                k = task[0]
                if task[1] is None:  # a kept file, decoded: its chain's choice is the step it records
                    chosen = kept[k], result
                    search.adopt(k, self.step_choice(images[k], kept[k]))
                else:
                    chosen = search.offer(k, task[1], result)
                    if chosen is None:
                        return []
                    files[k] = chosen[0]
                    if written is not None:
                        written(k, files[k])
                neighbours.coded(k, reference_of[k], chosen[1], reads.pop(k), files[k])
                bar.update()
                return [task for later in after[k] for task in tasks(later)]

            run_graph(self, [task for k in keys for task in tasks(k)], call, done, worker_count(workers, self.device, width))
        return files

    def decompress_series(
        self, files: Sequence[bytes], progress: bool = False, workers: int | None = None,
        decoded: Callable[[int, np.ndarray], None] | None = None,
    ) -> list[np.ndarray]:
        """The slices of a series' files (:meth:`compress_series`'), in the files' order. Each file
        is decoded once all the slices it was coded given are, found by the pixel CRCs it records
        (:func:`medvae.series.slice_key`), whichever way the series was coded; independent chains
        at once in ``workers`` processes (as :meth:`compress_series`); ``decoded(k, image)``, when
        given, gets each file's image as soon as it is decoded (``medvae decompress`` writes it out
        then). Raises :class:`BitstreamError` for a file whose slices none of the others decode to."""
        headers = [bitstream.read_header(data) for data in files]
        wanted = [slices_wanted(header) for header in headers]
        missing = [len(set(keys)) for keys in wanted]  # per file: the slices it reads not decoded yet
        waiting: dict[tuple, list[int]] = {}  # a slice (slice_key) -> the files that read it
        for k, keys in enumerate(wanted):
            for key in set(keys):
                waiting.setdefault(key, []).append(k)
        first = [k for k, count in enumerate(missing) if count == 0]
        chains = sum(len(waiting.get(slice_key(headers[k].pixels_crc, headers[k]), ())) for k in first)
        width = max(len(first), chains)  # decodings that may run at once: the key slices, then the chains' first slices
        images: list[np.ndarray | None] = [None] * len(files)
        slices: dict[tuple, np.ndarray] = {}  # each slice decoded, by slice_key

        def call(k: int) -> Call:
            return "decompress", (files[k],), {"previous": [slices[key] for key in wanted[k]] or None}

        with tqdm(total=len(files), desc="series", unit="slice", disable=not progress) as bar:
            def done(k: int, image: np.ndarray) -> list[int]:
                images[k], ready = image, []
                if decoded is not None:
                    decoded(k, image)
                produced = slice_key(headers[k].pixels_crc, headers[k])
                if produced not in slices:  # slices with the same pixels are one slice to their readers
                    slices[produced] = image
                    for j in waiting.pop(produced, []):
                        missing[j] -= 1
                        if not missing[j]:
                            ready.append(j)
                bar.update()
                return ready

            run_graph(self, first, call, done, worker_count(workers, self.device, width))
        stuck = [k for k, image in enumerate(images) if image is None]
        if stuck:
            raise BitstreamError(f"file {stuck[0]} of the series was coded given a slice (pixel CRC "
                                 f"{next(key[0] for key in wanted[stuck[0]] if key not in slices):08x}) that none of "
                                 "the series' files decodes to")
        return images

    def compress_with_pixels(self, image: np.ndarray, **options) -> tuple[bytes, np.ndarray]:
        """:meth:`compress` (the same ``options``), and the pixels every decoder gets from the
        file. The encoder computes them anyway, exactly as the decoder will (the checksum in
        the file is theirs), so a caller that weighs many candidate files (rate control)
        measures each without decoding it."""
        return self._compress(image, keep_pixels=True, **options)

    def bounded_coder(
        self, image: np.ndarray, *, bits_stored: int = 0, metadata: bytes = b"", previous: np.ndarray | None = None, **options
    ) -> BoundedCoder:
        """Code the lossy base of ``image`` once (``options`` as for :meth:`compress`, no bound)
        and return ``write(max_error, tighter_passes)``: the file of that bound on this base,
        with the pixels it decodes to, what ``compress(image, max_error=…, tighter_passes=…,
        previous=previous)`` gives, and ``base(max_error)``, the pixels of that file's base (:class:`BoundedCoder`).
        Rate control tries many bounds on one image; the base is the same for all (for a series
        slice, for all of one step of y: :func:`medvae.prediction.base_step`), and so is the
        residual network's first pass (it reads no decoded residual), which runs once for all the
        bounds written (once per bound for a model that reads the bounds). ``previous``: the
        previous slice of a series as decoded (the series residual model codes)."""
        residual = self._check_residual(0, previous)  # raises for weights without a residual model
        if {"max_error", "tighter_passes", "iterations"} & set(options):
            raise InputError("bounded_coder takes the base's options; the bound is write()'s")
        image = check_image(image)
        previous = self._previous_planes(previous, image, residual)
        # A series slice's base depends on the bound only through its step (one coding per step).
        base = functools.cache(lambda step: self._base(image, **options, keep_pixels=True, **self._base_options(previous, step)))
        step_of = functools.partial(self._base_step, previous)
        first_pass = functools.cache(
            lambda step, bounds: residual.coder.first_pass(base(step).decoded, base(step).value_range, previous, bounds)
        )

        def write(max_error: int, tighter_passes: int = 0, optimize: bool = False) -> tuple[bytes, np.ndarray]:
            self._check_residual(max_error)
            pass_bounds(max_error, tighter_passes)
            self._set_quality(options.get("quality"))  # a variable-rate header records the base's quality
            bounds = pass_bounds(max_error, tighter_passes) if residual.coder.bounds else (0,) * 4  # what the first pass reads
            step = step_of(max_error)
            return self._container(
                image, base(step), bits_stored, metadata, max_error, residual, tighter_passes, first_pass(step, bounds), previous, optimize
            )

        return BoundedCoder(write, lambda max_error: base(step_of(max_error)).decoded)

    def quality_coder(self, image: np.ndarray, **options) -> QualityCoder:
        """For variable-rate weights: ``write(quality)``, the file of that quality with the pixels
        it decodes to, what ``compress_with_pixels(image, quality=…, **options)`` gives, and
        ``size(quality)``, that file's length, four to six times faster (:class:`QualityCoder`).
        The analysis transform ``g_a``, which no quality changes, runs once for all the qualities
        coded (rate control tries many); a codec with :attr:`alternatives` asks each of
        :meth:`each_weights` for its own coder."""
        if not self.variable_rate or self.alternatives:
            raise InputError("quality_coder is for variable-rate weights without alternatives")
        if "quality" in options or "max_error" in options:
            raise InputError("quality_coder takes the image's options; the quality is write()'s")
        image = check_image(image)
        transformed = None
        if not options.get("refine_steps"):  # refinement fits the latents themselves, per quality
            with torch.inference_mode():
                transformed = self.twin.transform(self._model_input(image, options.get("value_range"), options.get("padding_value"))[2])

        def write(quality: float) -> tuple[bytes, np.ndarray]:
            return self._compress(image, keep_pixels=True, quality=quality, transformed=transformed, **options)

        def size(quality: float) -> int:  # the correction block has a fixed length
            block = correction.BLOCK_BYTES if self._corrects(image.shape) else 0
            return len(self._compress(image, quality=quality, transformed=transformed, synthesize=False, **options)[0]) + block

        return QualityCoder(write, size)

    def _compress(
        self, image: np.ndarray, *, bits_stored: int = 0, metadata: bytes = b"", max_error: int | None = None,
        tighter_passes: int = 0, keep_pixels: bool = False, previous: np.ndarray | None = None, optimize: bool = False, **options,
    ) -> tuple[bytes, np.ndarray | None]:
        """The file and (with ``keep_pixels``, or a bound) the pixels it decodes to."""
        residual = self._check_residual(max_error, previous)
        if tighter_passes and residual is None:
            raise InputError("tighter_passes is for near-lossless coding (max_error >= 1)")
        pass_bounds(max_error or 0, tighter_passes)  # checks it before the base is coded
        if optimize and not max_error:
            raise InputError("optimize is for near-lossless coding: give max_error >= 1 (the quantizer's bound)")
        self._check_coarser_step(options.get("coarser_step", 0), residual, previous)
        image = check_image(image)  # an array from here on: the container reads its dtype
        if not options.get("synthesize", True) and (residual is not None or self.alternatives):
            raise InputError("sizing a file without its synthesis is for one weights' lossy files (QualityCoder.size)")
        if residual is None:  # lossy: with alternatives, the weights whose file costs least
            codec, encoded = self._chosen(image, keep_pixels=keep_pixels, **options)
            return codec._container(image, encoded, bits_stored, metadata)
        previous = self._previous_planes(previous, image, residual)
        encoded = self._base(image, **options, keep_pixels=True, **self._base_options(previous, self._base_step(previous, max_error)))
        return self._container(image, encoded, bits_stored, metadata, max_error, residual, tighter_passes, previous=previous, optimize=optimize)

    def kept_pixels(self, k: int, image: np.ndarray, data: bytes, previous: list[np.ndarray] | None) -> np.ndarray:
        """The pixels of ``data``, the kept file of slice ``k`` (``image``) of a series coding
        (:meth:`compress_series`' ``kept``), decoded given ``previous``, the slices the coding
        plan has it read; a clear error if it does not decode so (another ``max_chain``, damage)
        or does not hold ``image`` within its bound (a stale or lossy file), which would
        otherwise become the neighbour of the slices coded after it."""
        try:
            pixels = self.decompress(data, previous=previous)
        except BitstreamError as exc:
            raise KeptFileError(k, f"does not decode as this series codes it ({exc})") from None
        bound = bitstream.read_header(data).max_error
        if bound is None or pixels.shape != image.shape or np.abs(pixels.astype(np.int64) - image).max() > bound:
            raise KeptFileError(k, "is not a lossless or near-lossless file of that slice")
        return pixels

    def step_choice(self, image: np.ndarray, data: bytes) -> int:
        """How much coarser than the rule (``coarser_step``) the series file ``data`` of ``image``
        quantized y: what its chain chose (:class:`medvae.series.StepSearch`), read back from a
        file an earlier run wrote, so the chain's later slices are coded as that run codes them."""
        header = bitstream.read_header(data)
        return choice_of(prediction.block_step(header.base_prediction), self.rule_step(image, header)) if header.base_prediction else 0

    def rule_step(self, image: np.ndarray, header: bitstream.Header) -> int:
        """The step of y (in quarters) the encoder's rule gives ``image`` coded as the lossless or
        near-lossless series slice ``header`` describes (its bound and value range): the series
        step of the bound, or the noise's if coarser (:func:`medvae.prediction.rule_step`, as the encoder applies it).
        A file's step less this is how much coarser the step search coded it (:class:`medvae.series.StepSearch`)."""
        return prediction.rule_step(prediction.base_step(header.max_error), image, header.value_range, self.noise_step)

    def _check_coarser_step(self, coarser_step: int, residual: Residual | None, previous) -> None:
        """An :class:`InputError` unless ``coarser_step`` (:meth:`compress`) is a whole number of
        quarters from 0 to 12 that the file can record: a residual file's, but a series slice's
        without a prediction block (``base_prediction=False``), which records no step."""
        if isinstance(coarser_step, bool) or not isinstance(coarser_step, (int, np.integer)) or not 0 <= coarser_step <= 12:
            raise InputError(f"coarser_step must be a whole number of quarters from 0 to 12, got {coarser_step!r}")
        if coarser_step and (residual is None or (previous is not None and not self.base_prediction)):
            raise InputError("coarser_step is for lossless and near-lossless files (max_error), and for a series slice "
                             "only with its base predicted (base_prediction), whose block records the step")

    @staticmethod
    def _previous_planes(previous, image: np.ndarray, residual: Residual) -> np.ndarray | None:
        """The previous slices a series residual model reads, as (n, H, W) planes nearest first
        (:func:`medvae.series.previous_planes`), from ``previous``: one slice, or the slices
        before this one, nearest first (an :class:`InputError` if any has another shape or dtype
        than ``image``); None without ``previous``."""
        slices = as_slices(previous)
        if slices is None:
            return None
        for before in slices:
            if before.shape != image.shape or before.dtype != image.dtype:
                raise InputError(f"the previous slice ({before.shape}, {before.dtype}) must have this one's shape and dtype ({image.shape}, {image.dtype})")
        return previous_planes(slices, residual.model.previous)

    def _base_step(self, previous: np.ndarray | None, max_error: int) -> int:
        """The least quantization step of y (in quarters) for a residual file at bound ``max_error``:
        for a series slice given ``previous`` (its planes, nearest first), coded against the analysis
        of the previous one, :func:`medvae.prediction.base_step`; the unit for a slice coded alone
        and with ``base_prediction=False``. With :attr:`noise_step`, the encoder takes the image's
        noise step where that is coarser (:meth:`_base_options`)."""
        return prediction.base_step(max_error) if previous is not None and self.base_prediction else prediction.UNIT_STEP

    def _base_options(self, previous: np.ndarray | None, step: int) -> dict[str, Any]:
        """:meth:`_base`'s options for a residual file's base whose y has at least ``step``
        (:meth:`_base_step`): a series slice's is predicted from the previous slice (``previous``:
        its planes); with :attr:`noise_step`, y takes the step the image's noise calls for where
        coarser (:func:`medvae.prediction.noise_step`, known once the image's value range is), but
        in a series slice without a prediction block, which has nowhere to record it."""
        if previous is None:
            return {"base_step": step, "noise_step": self.noise_step}
        if self.base_prediction:
            return {"base_step": step, "noise_step": self.noise_step, "predict_from": previous[0]}
        return {"base_step": step}  # a series slice without a prediction block, which would record another step

    def _chosen(self, image: np.ndarray, **options) -> tuple[Codec, _Encoded]:
        """The lossy coding of ``image`` (:meth:`_base`'s ``options``) by these weights or, with
        :attr:`alternatives`, by whichever of them gives the lowest :meth:`_cost`.

        Why every decoder agrees: the choice is the encoder's alone and the file names the weights
        it chose by their fingerprint, which decoding follows, so each file decodes exactly as one
        of those weights alone would. The cost is computed from the coded strings and from the
        pixels every decoder gets, so the same image and options choose the same weights on every
        machine, and re-encoding gives the same bytes."""
        if not self.alternatives:
            return self, self._base(image, **options)
        if options.get("quality") is None:  # every weights at this codec's quality, not at its own default
            options = {**options, "quality": self.default_quality}
        coded = [(codec, codec._base(image, **options)) for codec in (self, *self.alternatives)]
        return min(coded, key=lambda pair: pair[0]._cost(pair[1], options.get("lmbda")))

    def each_weights(self) -> list[Codec]:
        """These weights alone, then each of :attr:`alternatives`: codecs that share their models
        and code with one weights only. Rate control searches each apart, because choosing per
        quality between weights makes the rate jump back and forth along the quality."""
        if not self.alternatives:
            return [self]
        alone = copy.copy(self)  # the same model, twin and residual; no alternatives
        alone.alternatives = ()
        return [alone, *self.alternatives]

    def _cost(self, encoded: _Encoded, lmbda: float | None = None) -> float:
        """Rate–distortion cost of a variable-rate encoding as training weighs it: its bits plus
        λ·255² times its squared error in the model's [0, 1] units (λ: the quality's, or
        ``lmbda``). Between weights trained for the same λ, the lower cost is the better file."""
        lo, hi = encoded.value_range
        bits = 8 * sum(len(string) for string in encoded.strings)
        return bits + self._refine_lmbda(lmbda) * 255**2 * encoded.squared_error / (hi - lo) ** 2

    def _base(
        self, image: np.ndarray, *, value_range: tuple[int, int] | None = None, refine_steps: int = 0,
        lmbda: float | None = None, padding_value: int | None = None, iterations: int | None = None,
        quality: float | None = None, keep_pixels: bool = False, transformed: Stored | None = None, synthesize: bool = True,
        predict_from: np.ndarray | None = None, base_step: int = prediction.UNIT_STEP, noise_step: bool = False,
        coarser_step: int = 0,
    ) -> _Encoded:
        """The lossy coding of ``image`` with :meth:`compress`'s options, checked; ``predict_from``:
        the previous slice of a series as decoded, whose analysis predicts y, quantized with
        ``base_step`` (:mod:`medvae.prediction`) or, with ``noise_step``, the coarser step the noise calls for."""
        check_refinement(refine_steps, lmbda)
        if iterations is not None and not self.progressive:
            raise InputError(f"iterations= is for progressive models (rnn-conv); {self.name} codes one quality per weights")
        if self.progressive and refine_steps:
            raise InputError("latent refinement is for the VAE families; rnn-conv codes binary iterations")
        image = check_image(image)
        self._set_quality(quality)
        return self._encode(image, value_range, refine_steps, lmbda, padding_value, keep_pixels=keep_pixels, iterations=iterations,
                            transformed=transformed, synthesize=synthesize, predict_from=predict_from, base_step=base_step,
                            noise_step=noise_step, coarser_step=coarser_step)

    def compress_progressive(
        self, image: np.ndarray, *, bits_stored: int = 0, metadata: bytes = b"", padding_value: int | None = None,
        iterations: int | None = None,
    ) -> list[bytes]:
        """For a progressive model: the containers of 1, 2, …, ``iterations`` iterations (default:
        all) from one encoder run, each what :meth:`compress` writes for that count."""
        if not self.progressive:
            raise InputError(f"{self.name} is not a progressive model; use compress()")
        image = check_image(image)
        encodings = self._encodings(image, None, padding_value=padding_value, keep_pixels=False, iterations=iterations, every_iteration=True)
        return [self._container(image, encoded, bits_stored, metadata)[0] for encoded in encodings]

    def _container(
        self, image: np.ndarray, encoded: _Encoded, bits_stored: int, metadata: bytes, max_error: int | None = None,
        residual: Residual | None = None, tighter_passes: int = 0, first_pass: PassOutputs | None = None,
        previous: np.ndarray | None = None, optimize: bool = False,
    ) -> tuple[bytes, np.ndarray | None]:
        """The ``.mvae`` bytes of an encoding (and its residual layer, with ``max_error``; with
        ``optimize``, optimized coding, whose file declares the error it measures), and
        the pixels they decode to (None where the encoding kept only their checksum).
        ``first_pass``: the residual network's first pass on this base, if already computed;
        ``previous``: the series' previous slices, which a series residual model reads ((n, H, W),
        nearest first: :meth:`_previous_planes`)."""
        strings, exceptions, crc, residual_strings = encoded.strings, encoded.exceptions, encoded.pixels_crc, ()
        final, quantizer_bound = encoded.decoded, None
        if residual is not None:
            residual_strings, final = residual.coder.encode(
                image, encoded.decoded, encoded.value_range, max_error, tighter_passes, first_pass,
                exceptions.exact(image.shape), previous, adapt=self.adaptation, optimize=optimize,
            )
            crc = bitstream.pixels_crc(final)
            if optimize:  # the file declares the error its pixels have
                quantizer_bound, max_error = max_error, metrics.max_abs_error(image, final)
        header = bitstream.Header(
            model=self.name,
            fingerprint=self.fingerprint,
            dtype=image.dtype,
            shape=image.shape,
            value_range=encoded.value_range,
            latent_shape=self._latent_shape(image.shape),
            bits_stored=int(bits_stored),
            pixels_crc=crc,
            exceptions=exceptions.pack() if exceptions else b"",
            max_error=max_error,
            quantizer_bound=quantizer_bound,
            tighter_passes=tighter_passes,
            residual_fingerprint=residual.fingerprint if residual is not None else "",
            residual_strings=tuple(residual_strings),
            previous_crc=None if previous is None else bitstream.pixels_crc(previous[0]),
            earlier_crc=bitstream.pixels_crc(previous[1]) if previous is not None and len(previous) > 1 else None,
            base_prediction=encoded.prediction,
            base_step=prediction.UNIT_STEP if encoded.prediction else encoded.step,  # a series slice's is in its block
        )
        if self.variable_rate:
            peak = 2 ** metrics.stored_bits(bits_stored, image.dtype) - 1
            psnr = metrics.psnr_from_mse(encoded.squared_error / image.size, peak)
            header = dataclasses.replace(header, quality=self.model.quality, psnr=psnr, correction=encoded.correction)
        return bitstream.pack(header, strings, metadata), final

    def _check_residual(self, max_error: int | None, previous: np.ndarray | None = None) -> Residual | None:
        """The residual model that codes ``max_error`` (None when there is no bound to keep), or
        with ``previous`` the series residual model."""
        if max_error is None:
            if previous is not None:
                raise InputError("previous= is for lossless and near-lossless coding (give max_error)")
            return None
        check_max_error(max_error)
        if previous is not None:
            if self.series_residual is None:
                raise InputError("these weights come without a series residual model; code each slice alone (no previous=)")
            return self.series_residual
        if self.residual is None:
            raise InputError(
                "these weights come without a residual model, so they cannot code losslessly or with a "
                "bound on the error; use the shipped default (medvae.load('medvae')) or pass residual="
            )
        return self.residual

    def _iterations(self, iterations: int | None) -> int:
        """The iteration count a progressive model codes (its most by default)."""
        if iterations is None:
            return self.model.max_iterations
        if not 1 <= int(iterations) <= self.model.max_iterations:
            raise InputError(f"{self.name} codes 1 to {self.model.max_iterations} iterations, not {iterations}")
        return int(iterations)

    def _refine_lmbda(self, lmbda: float | None) -> float:
        if lmbda is not None:
            return float(lmbda)
        if self.lmbda is None:
            raise InputError("these weights do not record the lambda they were trained with; pass lmbda= to refine")
        return self.lmbda

    @torch.inference_mode()
    def decompress(self, data: bytes, previous: np.ndarray | None = None) -> np.ndarray:
        """Decode a container written with these weights; same shape and dtype as the input.
        ``previous``: for a file coded given the previous slice of its series (formats 9, 10), that
        slice as decoded, or the slices before it, nearest first (a format-10 file may read the
        one before it too); other files do not read it.

        Raises:
            BitstreamError: the data is damaged, names other weights, decodes to pixels
                whose CRC differs from the one the encoder stored, or needs the previous
                slice and was not given it (or was given another).
        """
        header, strings, _ = bitstream.unpack(data)
        for other in self.alternatives:  # written with other weights of this family
            if (header.model, header.fingerprint) == (other.name, other.fingerprint):
                return other.decompress(data, previous)
        if header.version == 1:
            return self._decompress_format1(header, strings)
        self._check_weights(header, self.fingerprint)
        self._quality_of(header)
        chunk = None if header.version == 2 else self.twin.chunk  # format 2: one string per latent
        before = self._previous_of(header, previous)
        predicted, step = self._predicted(header, before)
        if predicted is None or predicted.hyper is None:  # a predicted z has the shape of the slice the caller gave
            self.twin.check_lengths(strings, header.latent_shape, chunk)
        try:
            x_hat = self.twin.decode(strings, header.latent_shape, chunk, predicted, step)
            decoded = pixels(x_hat, header.shape, header.value_range, header.dtype)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise BitstreamError(f"entropy decoding failed: {exc}") from None
        if header.correction:
            decoded = correction.apply(decoded, header.value_range, header.correction)
        exceptions = Exceptions.unpack(header.exceptions, header.shape) if header.exceptions else None
        if exceptions:
            decoded = exceptions.restore(decoded)
        if header.max_error is not None:
            decoded = self._add_residual(header, decoded, exceptions, before)
        if bitstream.pixels_crc(decoded) != header.pixels_crc:
            raise BitstreamError(
                "the decoded pixels do not match the checksum the encoder stored: the file is damaged "
                "(or this decoder computes differently from the encoder); no image is returned"
            )
        return decoded

    def _predicted(self, header: bitstream.Header, previous: np.ndarray | None) -> tuple[prediction.Prediction | None, int]:
        """A file's base prediction and y's step: for formats 21 to 26 (:mod:`medvae.prediction`),
        the analysis of the previous slice (``previous``: :meth:`_previous_of`'s planes) with the
        options of the file's block, and its block's step; for other files, None and the header's
        step (the unit but in formats 27 to 29)."""
        if not header.base_prediction:
            return None, header.base_step
        if previous is None or not self._predicts:
            raise BitstreamError(f"corrupted bitstream: a format-{header.version} file cannot come from {self.name} weights")
        options, step, hyper = prediction.read(header.base_prediction, self.twin.y_channels)
        x = prediction_input(previous[0], header.value_range, self.model.downsampling_factor)
        y, z = self.twin.predicted_symbols(x, step)
        return prediction.Prediction(y, options, z, hyper), step

    def _quality_of(self, header: bitstream.Header) -> None:
        """Set the quality a variable-rate file was coded at (refusing one out of range)."""
        if self.variable_rate != (header.quality is not None):
            raise BitstreamError(f"corrupted bitstream: a format-{header.version} file cannot come from {self.name} weights")
        if self.variable_rate:
            try:
                self._set_quality(header.quality, geometric=header.version != bitstream.LINEAR_MIX_VERSION)
            except InputError as exc:
                lo, hi = self.quality_range
                why = f"is outside {self.quality_range}" if not lo <= header.quality <= hi else f"cannot be decoded: {exc}"
                raise BitstreamError(f"corrupted bitstream: quality {header.quality:g} {why}") from None

    @staticmethod
    def _previous_of(header: bitstream.Header, previous) -> np.ndarray | None:
        """The previous slices a format-9 or 10 file reads, as (n, H, W) planes nearest first,
        each checked against its checksum; None for other files. ``previous``: one slice, or the
        slices before this one, nearest first."""
        if header.previous_crc is None:
            return None
        slices = as_slices(previous)
        if slices is None:
            raise BitstreamError("this file was coded given the previous slice of its series; decode it with "
                                 "decompress(data, previous=that slice) or decompress_series")

        def checked(before: np.ndarray, crc: int, which: str) -> np.ndarray:
            if before.shape != header.shape or before.dtype != header.dtype or bitstream.pixels_crc(before) != crc:
                raise BitstreamError(f"the {which} given is not the one this file was coded with (checksum {crc:08x})")
            return before

        read = [checked(slices[0], header.previous_crc, "previous slice")]
        count = 1 if header.earlier_crc is None else 2
        if count == 2 and header.earlier_crc != header.previous_crc:  # else the previous slice was read twice (a key slice's next)
            if len(slices) < 2:
                raise BitstreamError("this file was coded given the two slices before it; decode it with "
                                     "decompress(data, previous=[the previous slice, the one before]) or decompress_series")
            read.append(checked(slices[1], header.earlier_crc, "slice before the previous one"))
        return previous_planes(read, count)  # as the encoder built them

    def _add_residual(
        self, header: bitstream.Header, base: np.ndarray, exceptions: Exceptions | None, previous: np.ndarray | None = None
    ) -> np.ndarray:
        """The base pixels plus the residual layer the header carries (``exceptions``: the base's,
        restored; ``previous``: the series' previous slice, for a format-9 file)."""
        residual = self._residual_for(header.residual_fingerprint)
        if residual.coder.series != (0 if previous is None else len(previous)):
            raise BitstreamError(f"corrupted bitstream: residual model {residual.fingerprint} and a format-{header.version} file")
        try:
            exact = exceptions.exact(header.shape) if exceptions else None
            return residual.coder.decode(
                list(header.residual_strings), base, header.value_range, header.coding_bound, header.tighter_passes,
                exact, bounded=header.version in bitstream.BOUNDED_VERSIONS, previous=previous,
                laws=header.version in bitstream.NAMED_LAW_VERSIONS, optimized=header.quantizer_bound is not None,
            )
        except (RuntimeError, ValueError, IndexError) as exc:
            raise BitstreamError(f"residual decoding failed: {exc}") from None

    def _residual_for(self, fingerprint: str) -> Residual:
        """The residual model a file names: this codec's, or a shipped one kept for older files
        (trained on this same base), else :class:`BitstreamError`."""
        for mine in (self.residual, self.series_residual):
            if mine is not None and mine.fingerprint == fingerprint:
                return mine
        path = zoo.residual_for_fingerprint(fingerprint)
        if path is not None:
            kept = _kept_residual(path)
            if kept.info.get("base_fingerprint") == self.fingerprint:
                return kept
        have = "no residual model" if self.residual is None else f"residual model {self.residual.fingerprint}"
        raise BitstreamError(f"bitstream needs residual model {fingerprint}; this codec has {have}")

    def _latent_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The coded latent's size (y, or z for hyperpriors): the image is padded to the stride."""
        stride = self.model.downsampling_factor
        return tuple(-(-s // stride) for s in shape)

    def _check_weights(self, header: bitstream.Header, expected: str) -> None:
        if header.model != self.name or header.fingerprint != expected:
            raise BitstreamError(
                f"bitstream was written with {header.model!r} weights {header.fingerprint}, "
                f"this codec has {self.name!r} weights {expected}"
            )
        if header.latent_shape != self._latent_shape(header.shape):
            raise BitstreamError(f"corrupted header: latent shape {header.latent_shape} does not fit image {header.shape}")

    def _decompress_format1(self, header: bitstream.Header, strings: list[bytes]) -> np.ndarray:
        """The float decoder of format 1, as the release that wrote the file ran it."""
        warnings.warn(
            "format-1 .mvae file: decoded with the float decoder of the release that wrote it, whose "
            "pixels may differ on other machines; re-encode it to get format 2, exact on every machine",
            LegacyFormatWarning,
            stacklevel=3,
        )
        self._check_weights(header, self.format1_fingerprint)
        with fixed_threads():
            try:
                out = self.model.decompress([[s] for s in strings], header.latent_shape)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise BitstreamError(f"entropy decoding failed: {exc}") from None
        h, w = header.shape
        return denormalize(out["x_hat"][0, 0, :h, :w].float().cpu().numpy(), *header.value_range, header.dtype)

    @torch.inference_mode()
    def reconstruct(self, image: np.ndarray, *, value_range: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
        """The decoded image and the entropy models' rate estimate (bpp, for training logs),
        without writing a container.

        The image is the one ``decompress(compress(image))`` returns, bit for bit (the
        tests check this).
        """
        codec, encoded = self._chosen(image, value_range=value_range, keep_pixels=True)
        out = codec.model(encoded.x.tensor().float().to(self.device))
        bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        return encoded.decoded, float(bits) / encoded.decoded.size


def load(
    source: str | os.PathLike, quality: int | None = None, *, device: str = "cpu", correction: bool = True, adaptation: bool = True,
    base_prediction: bool = True, noise_step: bool = True,
) -> Codec:
    """A :class:`Codec` from a checkpoint file or a shipped model name.

    ``medvae.load("runs/x/best.pt")`` reads a checkpoint; ``medvae.load("medvae", quality=3)``
    reads the shipped weights (see :mod:`medvae.zoo`). For a variable-rate model
    (``medvae-vr``) ``quality`` is any number in its range, the codec's default quality.
    ``correction=False``: its lossy files carry no correction of the reconstruction;
    ``adaptation=False``: its residual layers no adaptation of their laws; ``base_prediction=False``:
    its series slices no prediction of their base latent; ``noise_step=False``: its slices coded alone
    with a residual layer the unit step of y (:class:`Codec`).
    """
    path = zoo.resolve(source, quality)
    model = _load_weights(path)
    variable_rate = hasattr(model, "gain")
    if quality is not None and not variable_rate and path == Path(source):
        raise InputError(f"{source} holds weights for one rate; quality= is for shipped ladders and variable-rate models")
    variable_quality = quality if variable_rate else None  # else quality chose the file
    alternatives = [
        load(other, quality, device=device, correction=correction, adaptation=adaptation, base_prediction=base_prediction,
             noise_step=noise_step)
        for other in zoo.alternative_paths(path)
    ]
    return Codec(
        model, device=device, residual=_residual_at(zoo.residual_path(path)), quality=variable_quality,
        alternatives=alternatives, series_residual=_residual_at(zoo.residual_path(path, series=True)), correction=correction,
        adaptation=adaptation, base_prediction=base_prediction, noise_step=noise_step,
    )


def prediction_input(previous: np.ndarray, value_range: tuple[int, int], stride: int) -> NormalizedImage:
    """What a series slice's base latent is predicted from (:mod:`medvae.prediction`): the
    previous slice as decoded, clipped to this slice's value range and normalised with it, as
    every decoder can (the encoder's fill of this slice's padding and extremes is not in the file)."""
    lo, hi = value_range
    return NormalizedImage(np.clip(previous, lo, hi).astype(previous.dtype), lo, hi, stride)


def _load_weights(path: Path) -> CompressionModel:
    """:func:`load_model`, with the trained λ of shipped weights taken from the weights index."""
    model = load_model(path)
    if model.trained_lmbda is None:
        model.trained_lmbda = zoo.shipped_lmbda(path)
    return model


def _residual_at(path: Path | None) -> Residual | None:
    """The residual model in the file ``path`` (None for none)."""
    return None if path is None else load_residual(path)


@lru_cache(maxsize=4)
def _kept_residual(path: Path) -> Residual:
    """A shipped residual model kept for older files, loaded once."""
    return load_residual(path)


def _shipped(path: Path) -> Codec:
    """The codec of shipped weights with their residual model, built once for each weights
    fingerprint and residual model (shipping new weights to the same file, or a new residual
    model, makes a new codec, not a stale one)."""
    return _shipped_codec(path, zoo.shipped_fingerprint(path), zoo.residual_path(path), zoo.residual_path(path, series=True))


@lru_cache(maxsize=8)
def _shipped_codec(path: Path, fingerprint: str | None, residual: Path | None, series: Path | None) -> Codec:
    alternatives = [_shipped(other) for other in zoo.alternative_paths(path)]
    return Codec(_load_weights(path), residual=_residual_at(residual), alternatives=alternatives, series_residual=_residual_at(series))


def _as_codec(model: Codec | CompressionModel | str | os.PathLike) -> Codec:
    if isinstance(model, Codec):
        return model
    if isinstance(model, CompressionModel):
        return Codec(model)
    return load(model)


def compress(
    image: np.ndarray, quality: float | None = None, *, model: Codec | CompressionModel | str | os.PathLike | None = None,
    ratio: float | None = None, bpp: float | None = None, psnr: float | None = None, **kwargs,
) -> bytes:
    """Compress with the shipped default (:func:`medvae.zoo.default_model`: ``medvae-ctx``, any
    quality from 0 to 7; the ``medvae`` ladder for lossless and near-lossless coding) at
    ``quality``, or with ``model`` if given (a name such as ``"medvae"``, the ladder of seven
    integer qualities, a checkpoint path or a :class:`Codec`).
    With ``ratio``, ``bpp`` or ``psnr`` instead of a quality, rate control
    (:mod:`medvae.rate_control`) picks the file that meets the target: among the default's
    qualities and near-lossless error bounds, or among ``model``'s lossy point and error bounds.
    """
    if ratio is not None or bpp is not None or psnr is not None:
        from medvae.rate_control import Ladder, Target, compress_to

        if quality is not None or "max_error" in kwargs:
            raise InputError("a rate-control target (ratio, bpp, psnr) replaces quality and max_error; give one")
        if isinstance(kwargs.get("previous"), np.ndarray):
            raise InputError("with a rate target, the previous slice of a series is previous_slice= (previous= takes the rate-control choice of that slice)")
        shipped = zoo.default_model() if model is None else model if isinstance(model, str) and model in zoo.index() else None
        ladder = Ladder.shipped(shipped) if shipped else Ladder.of(_as_codec(model))
        return compress_to(image, Target(ratio, bpp, psnr), ladder, **kwargs).data
    if model is None:
        codec = _shipped(zoo.shipped_path(zoo.default_model(kwargs.get("max_error")), quality))
    else:
        codec = _as_codec(model)
    return codec.compress(image, quality=quality if codec.variable_rate else None, **kwargs)


def decompress(
    data: bytes, model: Codec | CompressionModel | str | os.PathLike | None = None, *, previous: np.ndarray | None = None
) -> np.ndarray:
    """Decode ``data``; without ``model``, the shipped weights named in its header are used.
    ``previous``: the previous slice of its series, for a file coded given it (:meth:`Codec.compress_series`)."""
    if model is None:
        return shipped_codec(bitstream.read_header(data)).decompress(data, previous)
    return _as_codec(model).decompress(data, previous)


def shipped_codec(header: bitstream.Header) -> Codec:
    """The codec of the shipped weights a file's ``header`` names (its model and weights
    fingerprint: :func:`medvae.zoo.path_for_fingerprint`), loaded once per process."""
    return _shipped(zoo.path_for_fingerprint(header.model, header.fingerprint))
