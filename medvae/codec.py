"""The one coding path: integer image → normalized, padded tensor → model → container bytes.

The Python API, the command line, the tests and ``evaluate.py`` all go through
:class:`Codec`, so what is measured is what users get.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models import CompressionModel

from medvae import bitstream, zoo
from medvae.checkpoint import fingerprint, load_model
from medvae.errors import BitstreamError, InputError
from medvae.intensity import check_image, default_value_range, denormalize, normalize
from medvae.refine import check_refinement, refine_latents

#: Torch threads used while coding. Convolution results depend on how the work is split
#: between threads; the entropy decoder depends on those results (through the hyperprior's
#: scales), so every encode and decode runs with this fixed count, whatever the caller set.
CODING_THREADS = 1


@contextmanager
def fixed_threads(n: int = CODING_THREADS) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_fixed_threads(method):
    """Decorator: run a coding method under :func:`fixed_threads`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with fixed_threads():
            return method(*args, **kwargs)

    return wrapper


class Codec:
    """Compresses 2-D integer images to bytes and back with one model's weights.

    Args:
        model: a registered MedVAE model (see :mod:`medvae.models`). It is put in
            eval mode on ``device``. Its entropy tables are computed if missing;
            pass ``update_tables=True`` after changing the weights yourself.
        device: where the transforms run. Decode on the same kind of device you
            encoded on: float results differ across CPU and GPU, and the entropy
            decoder depends on them.

    Coding always runs with :data:`CODING_THREADS` torch threads, so bitstreams and
    decoded images do not depend on the caller's thread setting (use several
    processes to code many images in parallel, as ``medvae compress --workers`` does).
    """

    def __init__(self, model: CompressionModel, *, device: str | torch.device = "cpu", update_tables: bool = False):
        if not hasattr(model, "model_name"):
            raise TypeError("Codec needs a registered MedVAE model (medvae.models.create(...))")
        self.model = model.eval().to(device)
        self.model.update(force=update_tables)
        self.device = torch.device(device)
        self.fingerprint = fingerprint(self.model)
        #: λ of the MSE loss the weights were trained with, when their file records it (None if not).
        self.lmbda: float | None = getattr(model, "trained_lmbda", None)

    @property
    def name(self) -> str:
        """Registered family name of the model, e.g. ``"medvae"``."""
        return self.model.model_name

    def _prepare(self, image: np.ndarray, value_range: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int], torch.Tensor]:
        image = check_image(image)
        lo, hi = default_value_range(image) if value_range is None else map(int, value_range)
        if hi <= lo:
            raise InputError(f"empty value range [{lo}, {hi}]")
        if image.min() < lo or image.max() > hi:
            raise InputError(f"image values [{image.min()}, {image.max()}] fall outside value_range [{lo}, {hi}]")
        x = torch.from_numpy(normalize(image, lo, hi))[None, None].to(self.device)
        stride = self.model.downsampling_factor
        h, w = image.shape
        pad_h, pad_w = (-h) % stride, (-w) % stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return image, (lo, hi), x

    def _restore(self, x_hat: torch.Tensor, shape: tuple[int, int], value_range: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        h, w = shape
        return denormalize(x_hat[0, 0, :h, :w].float().cpu().numpy(), *value_range, dtype)

    def compress(
        self,
        image: np.ndarray,
        *,
        value_range: tuple[int, int] | None = None,
        bits_stored: int = 0,
        metadata: bytes = b"",
        refine_steps: int = 0,
        lmbda: float | None = None,
    ) -> bytes:
        """Encode a 2-D uint8/uint16/int16 image to a self-describing ``.mvae`` container.

        Args:
            image: the stored integers (any size; padded to the model stride internally).
            value_range: (lo, hi) mapped to [0, 1]; default: the image's own min and max.
            bits_stored: the DICOM Bits Stored, recorded for metrics (0 = unknown).
            metadata: opaque bytes stored in the container (e.g. the source DICOM header).
            refine_steps: fit the latents to this image with that many gradient steps
                before coding (:mod:`medvae.refine`): a much slower encoder, higher
                fidelity at about the same size, the same decoder. Like all coding,
                it runs with :data:`CODING_THREADS` threads, so the bytes do not
                depend on the caller's thread setting.
            lmbda: the rate–distortion trade-off refinement aims at; default: the λ
                the weights were trained with (:attr:`lmbda`).
        """
        check_refinement(refine_steps, lmbda)
        image, value_range, x = self._prepare(image, value_range)
        with fixed_threads():
            if refine_steps:
                latents = refine_latents(self.model, x, self._refine_lmbda(lmbda), steps=refine_steps, size=image.shape)
            with torch.inference_mode():
                out = self.model.compress_latents(latents if refine_steps else self.model.analyze(x))
        header = bitstream.Header(
            model=self.name,
            fingerprint=self.fingerprint,
            dtype=image.dtype,
            shape=image.shape,
            value_range=value_range,
            latent_shape=tuple(int(s) for s in out["shape"]),
            bits_stored=int(bits_stored),
        )
        return bitstream.pack(header, [group[0] for group in out["strings"]], metadata)

    def _refine_lmbda(self, lmbda: float | None) -> float:
        if lmbda is not None:
            return float(lmbda)
        if self.lmbda is None:
            raise InputError("these weights do not record the lambda they were trained with; pass lmbda= to refine")
        return self.lmbda

    @torch.inference_mode()
    @_with_fixed_threads
    def decompress(self, data: bytes) -> np.ndarray:
        """Decode a container written with these weights; same shape and dtype as the input."""
        header, strings, _ = bitstream.unpack(data)
        if header.model != self.name or header.fingerprint != self.fingerprint:
            raise BitstreamError(
                f"bitstream was written with {header.model!r} weights {header.fingerprint}, "
                f"this codec has {self.name!r} weights {self.fingerprint}"
            )
        expected = self._latent_shape(header.shape)
        if header.latent_shape != expected:
            raise BitstreamError(f"corrupted header: latent shape {header.latent_shape} does not fit image {header.shape}")
        try:
            out = self.model.decompress([[s] for s in strings], header.latent_shape)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise BitstreamError(f"entropy decoding failed: {exc}") from None
        return self._restore(out["x_hat"], header.shape, header.value_range, header.dtype)

    @torch.inference_mode()
    @_with_fixed_threads
    def reconstruct(self, image: np.ndarray, *, value_range: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
        """Eval-mode forward pass without entropy coding: (decoded image, estimated bpp).

        The image equals ``decompress(compress(image))`` bit for bit (the tests
        check this); the bpp is the likelihood estimate, for training logs only.
        """
        image, value_range, x = self._prepare(image, value_range)
        out = self.model(x)
        bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
        return self._restore(out["x_hat"], image.shape, value_range, image.dtype), float(bits) / image.size

    def _latent_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        # The image is padded to the stride, so the coded latent (y, or z for
        # hyperprior models) is ceil(size / stride) on each side.
        stride = self.model.downsampling_factor
        return tuple(-(-s // stride) for s in shape)


def load(source: str | os.PathLike, quality: int | None = None, *, device: str = "cpu") -> Codec:
    """A :class:`Codec` from a checkpoint file or a shipped model name.

    ``medvae.load("runs/x/best.pt")`` reads a checkpoint; ``medvae.load("medvae", quality=3)``
    reads the shipped weights (see :mod:`medvae.zoo`).
    """
    path = Path(source)
    if not path.is_file():
        if isinstance(source, str) and os.sep not in source and not path.suffix:
            path = zoo.shipped_path(source, quality)
        else:
            raise FileNotFoundError(f"no such checkpoint: {source}")
    return Codec(_load_weights(path), device=device)


def _load_weights(path: Path) -> CompressionModel:
    """:func:`load_model`, with the trained λ of shipped weights taken from the weights index."""
    model = load_model(path)
    if model.trained_lmbda is None:
        model.trained_lmbda = zoo.shipped_lmbda(path)
    return model


@lru_cache(maxsize=8)
def _shipped(path: Path) -> Codec:
    return Codec(_load_weights(path))


def _as_codec(model: Codec | CompressionModel | str | os.PathLike) -> Codec:
    if isinstance(model, Codec):
        return model
    if isinstance(model, CompressionModel):
        return Codec(model)
    return load(model)


def compress(image: np.ndarray, quality: int | None = None, *, model: Codec | CompressionModel | str | os.PathLike | None = None, **kwargs) -> bytes:
    """Compress with the shipped ``medvae`` weights at ``quality``, or with ``model`` if given."""
    codec = _shipped(zoo.shipped_path("medvae", quality)) if model is None else _as_codec(model)
    return codec.compress(image, **kwargs)


def decompress(data: bytes, model: Codec | CompressionModel | str | os.PathLike | None = None) -> np.ndarray:
    """Decode ``data``; without ``model``, the shipped weights named in its header are used."""
    if model is None:
        header = bitstream.read_header(data)
        return _shipped(zoo.path_for_fingerprint(header.model, header.fingerprint)).decompress(data)
    return _as_codec(model).decompress(data)
