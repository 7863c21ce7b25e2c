"""Learned codecs in the registry: one rate point per checkpoint, through :class:`medvae.Codec`.

Family names are the registered model names (``medvae``, ``medvae-vr``, ``bls2017``,
``balle2018``, ``bls-residual``, ``rnn-conv``). Values are checkpoint paths or globs
(``medvae=runs/*/best.pt``), or shipped qualities (``medvae=q3``); no value
means every shipped quality of that model. The variable-rate ``medvae-vr`` gives one
point per integer quality (1 to 7) of its one set of weights, shipped or named
(``medvae-vr=path.pt``), or one point at a given quality (``medvae-vr=q4.5``). The
progressive ``rnn-conv`` has one rate point per iteration count instead: ``rnn-conv`` (the shipped weights, every
count), ``rnn-conv=4`` (four iterations) or ``rnn-conv=path.pt`` (every count).
Rates are the real ``.mvae`` bytes, header and CRC included, never the likelihood estimate.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

import medvae
from medvae import zoo
from medvae.errors import BitstreamError, InputError, MedVAEError
from medvae.evaluation.codecs import Family, ImageCodec, register_family
from medvae.models import available


class Learned(ImageCodec):
    """A :class:`medvae.Codec` as one rate point.

    Args:
        codec: the codec (weights) of this point.
        family: curve name (the model family).
        value: what identifies the point: a checkpoint stem or ``q<N>``.
        refine_steps: encoder-side latent refinement steps (:mod:`medvae.refine`); 0: none.
    """

    knob = "model"
    learned = True

    def __init__(self, codec, family: str, value: str, refine_steps: int = 0, quality: float | None = None):
        super().__init__(value, lossless=False)
        self.codec = codec
        self.family = family  # instance attribute: one class serves every model family
        self.refine_steps = int(refine_steps)
        self.quality = quality  # a variable-rate codec's quality (None: single-rate weights)

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.codec.compress(image, bits_stored=int(bits_stored or 0), refine_steps=self.refine_steps, quality=self.quality)

    def decode(self, data: bytes) -> np.ndarray:
        return self.codec.decompress(data)


def _from_path(family: str, path: Path) -> Learned:
    try:
        codec = medvae.load(path)
    except RuntimeError as exc:  # weights that do not fit the current model code
        first = str(exc).strip().splitlines()[0]
        raise MedVAEError(f"{path}: cannot load these weights into the current model code ({first})") from None
    if codec.name != family:
        raise InputError(f"{path} holds a {codec.name!r} model, not {family!r}")
    stem = path.stem if path.stem not in ("best", "last", "model", "checkpoint") else f"{path.parent.name}/{path.stem}"
    return _points(codec, family, stem)


def _points(codec, family: str, name: str = "") -> list[Learned]:
    """A single-rate codec's point (``name``), or a variable-rate codec's at every integer
    quality of a trained level (``name@q3``; ``q3`` for the shipped weights, ``name`` empty;
    not the extrapolated qualities below 1)."""
    if not codec.variable_rate:
        return [Learned(codec, family, name)]
    prefix = f"{name}@" if name else ""
    return [Learned(codec, family, f"{prefix}q{q}", quality=float(q)) for q in range(1, codec.model.levels + 1)]


def _shipped(family: str, quality: float) -> Learned:
    if zoo.is_variable_rate(family):
        return Learned(medvae.load(family), family, f"q{quality:g}", quality=float(quality))
    return Learned(medvae.load(family, quality=quality), family, f"q{quality:g}")


def maker(family: str):
    """The ``make`` function of a learned family (see :class:`~medvae.evaluation.codecs.Family`)."""

    def make(value: str | None) -> list[ImageCodec]:
        if value is None:
            if zoo.is_variable_rate(family):
                return _points(medvae.load(family), family)
            qualities = zoo.qualities(family)
            if not qualities:
                raise MedVAEError(
                    f"no shipped {family!r} weights are installed; name checkpoints instead: "
                    f"--codecs {family}=path/to/checkpoint.pt"
                )
            return [_shipped(family, q) for q in qualities]
        text = value.strip()
        if _is_number(text.lower().lstrip("q")) and not os.path.exists(text):
            return [_shipped(family, float(text.lower().lstrip("q")))]
        paths = sorted(glob.glob(os.path.expanduser(text))) if glob.has_magic(text) else [text]
        if not paths:
            raise InputError(f"no checkpoint matches {text!r}")
        points = []
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"no such checkpoint: {p}")
            points += _from_path(family, Path(p))
        return points

    return make


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _ProgressiveFiles:
    """The files of every iteration count of the last image coded: one encoder run serves
    all the points of a progressive codec (:meth:`medvae.Codec.compress_progressive`)."""

    def __init__(self, codec):
        self.codec, self.key, self.files = codec, None, []

    def get(self, image: np.ndarray, bits_stored: int) -> list[bytes]:
        key = (image.shape, image.dtype.str, bits_stored, hash(image.tobytes()))
        if key != self.key:
            self.key, self.files = key, self.codec.compress_progressive(image, bits_stored=bits_stored)
        return self.files


class Progressive(ImageCodec):
    """A progressive codec (``rnn-conv``) decoded after ``value`` iterations: one rate point per count.
    One encoder run codes every count, so its time is charged to the first point asked."""

    knob = "iterations"
    learned = True

    def __init__(self, files: _ProgressiveFiles, family: str, iterations: int):
        super().__init__(int(iterations), lossless=False)
        self.files, self.family = files, family

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.files.get(image, int(bits_stored or 0))[self.value - 1]

    def decode(self, data: bytes) -> np.ndarray:
        return self.files.codec.decompress(data)


def progressive_maker(family: str):
    """The ``make`` function of a progressive family: the shipped weights or a checkpoint at
    every iteration count, or the shipped weights at one count (``rnn-conv=4``)."""

    def make(value: str | None) -> list[ImageCodec]:
        text = "" if value is None else value.strip()
        if text.isdigit() and not os.path.exists(text):
            codec, counts = medvae.load(family), [int(text)]
        else:
            codec = medvae.load(family) if not text else _from_path(family, Path(text))[0].codec
            counts = list(range(1, codec.model.max_iterations + 1))
        if not all(1 <= k <= codec.model.max_iterations for k in counts):
            raise InputError(f"{family}: iterations must be 1 to {codec.model.max_iterations}, got {value!r}")
        files = _ProgressiveFiles(codec)
        return [Progressive(files, family, k) for k in counts]

    return make


#: Error bounds of the residual layer's default sweep (0: lossless).
DEFAULT_MAX_ERROR = (0, 1, 2, 4, 8)


class WithResidual(ImageCodec):
    """The shipped default ``medvae`` plus its residual layer at error bound ``value``
    (0: lossless; :mod:`medvae.residual`); ``refine_steps``: the lossy base refined first
    (:mod:`medvae.refine`; the family is then named ``… (refined)``)."""

    family = "medvae-residual"
    knob = "max_error"
    learned = True
    #: The bounds a spec without values codes.
    default_bounds: ClassVar[tuple[int, ...]] = DEFAULT_MAX_ERROR

    def __init__(self, codec, max_error: int, refine_steps: int = 0):
        super().__init__(int(max_error), lossless=int(max_error) == 0)
        self.codec, self.refine_steps = codec, int(refine_steps)
        if self.refine_steps:
            self.family = f"{type(self).family} (refined)"

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.codec.compress(image, bits_stored=int(bits_stored or 0), max_error=self.value, refine_steps=self.refine_steps)

    def decode(self, data: bytes) -> np.ndarray:
        return self.codec.decompress(data)


class SeriesWithResidual(WithResidual):
    """:class:`WithResidual` on a series: each slice but its key slices (one in the middle of every
    15) coded given its neighbours towards the key slice (:meth:`medvae.Codec.compress_series`, the
    series residual model). The stream is the
    slices' files, each after its length (4 bytes), so a slice's row counts its own file and 4
    bytes; one image alone is a series of one."""

    family = "medvae-series"
    series: ClassVar[bool] = True
    _LENGTH = struct.Struct("<I")

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.encode_series(np.asarray(image)[None], bits_stored)

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_series(data)[0]

    def encode_series(self, volume: np.ndarray, bits_stored: int | None = None) -> bytes:
        files = self.codec.compress_series(list(volume), max_error=self.value, bits_stored=int(bits_stored or 0), refine_steps=self.refine_steps)
        return b"".join(self._LENGTH.pack(len(f)) + f for f in files)

    def decode_series(self, data: bytes) -> np.ndarray:
        files, pos = [], 0
        while pos < len(data):
            if pos + self._LENGTH.size > len(data):
                raise BitstreamError("truncated series stream")
            (length,) = self._LENGTH.unpack_from(data, pos)
            files.append(data[pos + self._LENGTH.size : pos + self._LENGTH.size + length])
            pos += self._LENGTH.size + length
        return np.stack(self.codec.decompress_series(files))


class OptimizedResidual(WithResidual):
    """:class:`WithResidual` with optimized quantization (:meth:`medvae.Codec.compress`, ``optimize``):
    ``value`` is the quantizer's bound τ (≥ 1); the file declares the error it measures, not τ.
    Rate control's near-lossless candidates are these."""

    family = "medvae-optimized"
    knob = "quantizer_bound"
    default_bounds: ClassVar[tuple[int, ...]] = tuple(b for b in DEFAULT_MAX_ERROR if b)  # optimized coding is near-lossless

    def __init__(self, codec, max_error: int, refine_steps: int = 0):
        if int(max_error) < 1:
            raise InputError(f"{self.family}: the quantizer's bound is at least 1, got {max_error}")
        super().__init__(codec, max_error, refine_steps)

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.codec.compress(image, bits_stored=int(bits_stored or 0), max_error=self.value, refine_steps=self.refine_steps, optimize=True)


def _bounds(point: type[WithResidual], value: str | None) -> list[int]:
    """The error bounds of a ``medvae-residual``, ``medvae-optimized`` or ``medvae-series`` spec value."""
    text = "" if value is None else value.strip().lower()
    try:
        bounds = list(point.default_bounds) if value is None else [0 if text == "lossless" else int(text)]
    except ValueError:
        raise InputError(f"{point.family}: bad max_error {value!r} (an integer >= 0, or lossless)") from None
    if any(b < 0 for b in bounds):
        raise InputError(f"{point.family}: max_error must be >= 0, got {value!r}")
    return bounds


def _bounded_points(point: type[WithResidual], needs: str) -> Callable[[str | None], list[ImageCodec]]:
    """The points maker of ``point``'s family: the shipped default at each bound of the spec
    value, refused when its weights lack the ``needs`` attribute's residual model."""

    def points(value: str | None) -> list[ImageCodec]:
        bounds = _bounds(point, value)
        codec = medvae.load("medvae")
        if getattr(codec, needs) is None:
            raise MedVAEError(f"the installed medvae weights come without a {needs.replace('_', ' ')} model")
        return [point(codec, b) for b in bounds]

    return points


def _register() -> None:
    for name in available():
        if name == "rnn-conv":
            register_family(Family(name, progressive_maker(name), "learned rnn-conv: one point per iteration count", learned=True))
        else:
            register_family(Family(name, maker(name), f"learned {name} checkpoints", learned=True))
    register_family(Family("medvae-residual", _bounded_points(WithResidual, "residual"),
                           "medvae plus its residual layer: lossless, max_error", learned=True))
    register_family(Family("medvae-optimized", _bounded_points(OptimizedResidual, "residual"),
                           "medvae-residual with optimized quantization: quantizer bound, the error measured", learned=True))
    register_family(Family("medvae-series", _bounded_points(SeriesWithResidual, "series_residual"),
                           "medvae-residual on a series, each slice but its key slices given a neighbour", learned=True))


_register()
