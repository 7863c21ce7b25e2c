"""Every codec evaluation can run, learned or classical, behind one interface.

A *family* (``"jpeg2000"``, ``"spiht"``, ``"medvae"`` ...) expands into *rate
points*: one :class:`ImageCodec` per knob value (a target bpp, a JPEG-XL
distance, a JPEG-LS NEAR, a checkpoint ...). Each point turns a 2-D integer
image into bytes and back; the rate is always ``len(bytes)``.

Families register themselves with :func:`register_family`; :func:`parse_spec`
reads the command line's ``--codecs`` string and :func:`expand` turns it into
rate points::

    jpeg2000                         default sweep (lossy points + lossless)
    jpeg2000=0.1,0.5,lossless        chosen points
    jpegls,jpegxl=1,2                several families
    medvae=runs/a.pt,runs/b.pt       learned: one point per checkpoint (globs work)
    medvae                           learned: the shipped qualities
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from medvae.errors import InputError


class ImageCodec(ABC):
    """One rate point of one codec: ``encode(image) -> bytes``, ``decode(bytes) -> image``.

    Attributes:
        family: curve name in tables and plots (``"jpeg2000"``).
        knob: what ``value`` means (``"bpp"``, ``"distance"``, ``"near"``, ...).
        value: the knob setting of this point (``None`` for lossless points).
        lossless: the point promises an exact reconstruction.
        native_depth: the codec codes every bit the image stores; when False,
            :meth:`notes` says what it did instead.
    """

    family: ClassVar[str] = ""
    knob: ClassVar[str] = ""
    native_depth: ClassVar[bool] = True
    learned: ClassVar[bool] = False

    def __init__(self, value: Any = None, lossless: bool = False):
        self.value = value
        self.lossless = bool(lossless)

    @property
    def label(self) -> str:
        """Short unique name of this point, e.g. ``jpeg2000[bpp=0.5]``."""
        return f"{self.family}[lossless]" if self.lossless else f"{self.family}[{self.knob}={self.value}]"

    @abstractmethod
    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        """Compress a 2-D uint8/uint16/int16 image whose values fit ``bits_stored`` bits."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress to an integer image with the original values' representation."""

    def notes(self, image: np.ndarray, bits_stored: int | None = None) -> str:
        """Caveat for this image (e.g. a depth reduction); empty when coded as is."""
        return ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


# --------------------------------------------------------------------- bit depth


def check_depth(image: np.ndarray, bits_stored: int | None) -> tuple[np.ndarray, int, bool]:
    """Validate an image for classical coding: (image, bits_stored, signed).

    ``bits_stored`` defaults to the dtype's width. Values must fit: unsigned in
    ``[0, 2**bits)``, signed in ``[-2**(bits-1), 2**(bits-1))``; a mismatch is an
    :class:`InputError` rather than a silent clip.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"expected a non-empty 2-D image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.int16):
        raise InputError(f"unsupported dtype {image.dtype}; expected uint8, uint16 or int16")
    bits = int(bits_stored) if bits_stored else image.dtype.itemsize * 8
    if not 2 <= bits <= image.dtype.itemsize * 8:
        raise InputError(f"bits_stored={bits} does not fit dtype {image.dtype}")
    signed = image.dtype.kind == "i"
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if int(image.min()) < lo or int(image.max()) > hi:
        raise InputError(
            f"image values [{image.min()}, {image.max()}] do not fit bits_stored={bits} "
            f"({'signed' if signed else 'unsigned'})"
        )
    return image, bits, signed


@dataclass(frozen=True)
class DepthHeader:
    """6-byte prefix for codestreams that cannot say how to restore the stored values.

    JPEG-LS, JPEG-XL and JPEG code unsigned samples only, and JPEG at most 12
    bits. Before coding we subtract ``offset`` (``2**(bits-1)`` for signed data,
    or the image minimum for JPEG range reduction) and shift right by
    ``shift``; the decoder undoes both. The 6 bytes are part of the stream and
    so of its rate.
    """

    bits: int
    signed: bool
    shift: int = 0
    offset: int = 0

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<BBi")
    SIZE: ClassVar[int] = 6

    def pack(self) -> bytes:
        return self._STRUCT.pack(self.bits | (0x80 if self.signed else 0), self.shift, self.offset)

    @classmethod
    def unpack(cls, data: bytes) -> tuple["DepthHeader", bytes]:
        if len(data) < cls.SIZE:
            raise InputError("truncated codestream")
        flags, shift, offset = cls._STRUCT.unpack_from(data)
        return cls(bits=flags & 0x7F, signed=bool(flags & 0x80), shift=shift, offset=offset), data[cls.SIZE :]

    def to_unsigned(self, image: np.ndarray) -> np.ndarray:
        """Stored values → the unsigned samples the codec sees (uint8 or uint16)."""
        x = image.astype(np.int64) - self.offset
        if self.shift:
            x = (x + (1 << (self.shift - 1))) >> self.shift
            x = np.minimum(x, (1 << (self.bits - self.shift)) - 1)
        return x.astype(np.uint8 if self.coded_bits <= 8 else np.uint16)

    def restore(self, coded: np.ndarray) -> np.ndarray:
        """Decoded unsigned samples → stored values in the original dtype."""
        x = (coded.astype(np.int64) << self.shift) + self.offset
        dtype = np.int16 if self.signed else (np.uint8 if self.bits <= 8 else np.uint16)
        info = np.iinfo(dtype)
        return np.clip(x, info.min, info.max).astype(dtype)

    @property
    def coded_bits(self) -> int:
        """Sample precision handed to the codec."""
        return self.bits - self.shift

    @classmethod
    def for_image(cls, image: np.ndarray, bits: int, signed: bool) -> "DepthHeader":
        """Lossless mapping to unsigned ``bits``-bit samples (signed data: + 2**(bits-1))."""
        return cls(bits=bits, signed=signed, offset=-(1 << (bits - 1)) if signed else 0)


# ---------------------------------------------------------------------- registry


@dataclass
class Family:
    """A registered codec family: how to build a point from a knob value, and its sweep."""

    name: str
    make: Callable[[str | None], list[ImageCodec]]  # one spec value (None: default sweep) -> points
    description: str = ""
    learned: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` available to :func:`expand` and the command line."""
    if family.name in _FAMILIES:
        raise ValueError(f"codec family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def _load_builtin() -> None:
    # Importing the modules registers their families.
    from medvae.evaluation import coiflet, htj2k, jpeg, jpeg2000, jpegls, jpegxl, learned, rle, spiht, video  # noqa: F401


def families() -> dict[str, Family]:
    """Every registered family by name."""
    _load_builtin()
    return dict(_FAMILIES)


def parse_spec(spec: str | Sequence[str]) -> list[tuple[str, list[str]]]:
    """``"medvae=a.pt,b.pt,jpeg2000"`` → ``[("medvae", ["a.pt", "b.pt"]), ("jpeg2000", [])]``.

    Comma-separated tokens; ``name=value`` starts a family, a bare registered
    name starts one with its default sweep, and any other bare token is one
    more value of the family before it.
    """
    known = families()
    tokens: list[str] = []
    for part in [spec] if isinstance(spec, str) else spec:
        tokens += [t.strip() for t in part.split(",") if t.strip()]
    out: list[tuple[str, list[str]]] = []
    for token in tokens:
        name, sep, value = token.partition("=")
        name = name.strip().lower()
        if sep:
            if name not in known:
                raise InputError(f"unknown codec {name!r}; available: {', '.join(sorted(known))}")
            out.append((name, [value.strip()] if value.strip() else []))
        elif name in known:
            out.append((name, []))
        elif out:
            out[-1][1].append(token)
        else:
            raise InputError(f"unknown codec {token!r}; available: {', '.join(sorted(known))}")
    if not out:
        raise InputError("no codecs given")
    return out


def expand(spec: str | Sequence[str]) -> list[ImageCodec]:
    """All rate points named by a ``--codecs`` spec, in order."""
    known = families()
    points: list[ImageCodec] = []
    for name, values in parse_spec(spec):
        make = known[name].make
        if values:
            for value in values:
                points += make(value)
        else:
            points += make(None)
    labels = [p.label for p in points]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise InputError(f"rate points given twice: {', '.join(dupes)}")
    return points


def sweep(name: str) -> list[ImageCodec]:
    """The default rate points of family ``name``."""
    try:
        return families()[name].make(None)
    except KeyError:
        raise InputError(f"unknown codec {name!r}; available: {', '.join(sorted(families()))}") from None


def numeric_sweep(
    cls: Callable[..., ImageCodec], default: Sequence[float], lossless: bool, cast: Callable[[str], Any] = float
) -> Callable[[str | None], list[ImageCodec]]:
    """A ``make`` for families with one numeric knob and, optionally, a lossless mode.

    ``None`` gives ``default`` (plus the lossless point); ``"lossless"`` gives the
    lossless point; anything else is parsed with ``cast``.
    """

    def make(value: str | None) -> list[ImageCodec]:
        if value is None:
            return [cls(v) for v in default] + ([cls(None, lossless=True)] if lossless else [])
        if value.lower() == "lossless":
            if not lossless:
                raise InputError(f"{cls.family} has no lossless mode")
            return [cls(None, lossless=True)]
        try:
            return [cls(cast(value))]
        except ValueError:
            raise InputError(f"{cls.family}: bad {cls.knob} value {value!r}") from None

    return make


def target_rate_search(
    encode_at: Callable[[float], bytes], target_bytes: float, lo: float, hi: float, iters: int = 20
) -> bytes:
    """Largest stream not above ``target_bytes``, by bisection on a log-scale knob.

    ``encode_at(k)`` should give fewer bytes as ``k`` grows (a quantizer step);
    the largest fitting stream seen is kept, so small non-monotonicities do no
    harm. Returns the stream at ``hi`` if even that is too large.
    """
    best = encode_at(hi)
    if len(best) > target_bytes:
        return best
    a, b = np.log(lo), np.log(hi)
    low = encode_at(lo)
    if len(low) <= target_bytes:
        return low
    for _ in range(iters):
        mid = 0.5 * (a + b)
        data = encode_at(float(np.exp(mid)))
        if len(data) <= target_bytes:
            b = mid
            if len(data) > len(best):
                best = data
        else:
            a = mid
    return best


__all__ = [
    "DepthHeader",
    "Family",
    "ImageCodec",
    "check_depth",
    "expand",
    "families",
    "numeric_sweep",
    "parse_spec",
    "register_family",
    "sweep",
    "target_rate_search",
]
