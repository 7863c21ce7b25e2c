"""Rate control: the file that meets a target compression ratio, bpp or PSNR.

A radiology user asks for "10:1" or "at least 50 dB", not for a quality number. The search
runs over a :class:`Ladder`: the lossy settings (lowest rate first: a variable-rate model's
continuous quality on a grid of :data:`QUALITY_GRID`, or the qualities of separately trained
weights) and, when a codec comes with a residual model, near-lossless coding at every error
bound τ (the largest first), each also with its first residual passes at τ − 1 for the rates
in between (:data:`NEAR_LOSSLESS`), coded with optimized quantization (``optimize``: about 10 %
fewer bits at the same PSNR; the file declares the error bound it measures, at most 3τ + 1 and
an offset, rather than τ), and lossless coding last. Each candidate is really coded, and measured on the pixels its
encoder computes exactly as every decoder will (the file's checksum is theirs); the near-lossless
candidates share one coding of their base, a bpp or ratio search sizes a variable-rate model's
qualities without their synthesis transform (:class:`medvae.codec.QualityCoder`), and the chosen
file is decoded once, which checks it.
So what is reported is what the file gives. A codec with alternative weights (the default
``medvae-ctx``) has each weights' quality grid searched on its own, and the better of their
answers kept, so its search codes twice as much. (Choosing between the weights at each quality,
as :meth:`medvae.Codec.compress` does, makes the rate jump back where the choice switches, and
a search along such a curve can stop short of the budget: 0.477 for 0.5 bpp on one CT slice.)

* ``psnr=P``: the smallest file whose PSNR is at least ``P``. Lossless coding meets any
  target, so this fails (:class:`InputError`) only for weights without a residual model.
* ``bpp=B`` or ``ratio=R`` (``R = H·W·bits / 8 / bytes``, against the bits the image stores,
  as :func:`medvae.metrics.compression_ratio`): the best-quality file at or below the budget
  (highest PSNR among those that fit), or an :class:`InputError` when none fits.

Conventions: PSNR is at the stored bit depth (peak ``2^bits − 1``, ``bits`` = the DICOM Bits
Stored given, else the dtype's width), over the whole image, as every benchmark here reports
it; a display-windowed PSNR would depend on a window the archive does not know. Each ladder is
searched by interpolation (:func:`_first`), assuming rate and quality rise together along it (true of the shipped
ladder's qualities except q7, which rarely beats q6; where it fails the search may return a
larger file than needed, never a file that misses the target).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from medvae import metrics
from medvae.codec import Codec
from medvae.errors import InputError
from medvae.residual.coder import quantize

#: Steps of a variable-rate model's quality that rate control tries (a search codes 4–8 of them).
QUALITY_GRID = 1 / 64
#: Largest error bound near-lossless rate control tries.
LARGEST_BOUND = 128
#: Near-lossless candidates (τ, j), lowest rate first: each bound τ from :data:`LARGEST_BOUND`
#: down to 1, then with its first j residual passes at τ − 1 (j = 1, 2, 3: rates between τ's
#: and τ − 1's), and lossless last. A search codes a handful of these 513, and lands within
#: a quarter of one bound's step.
NEAR_LOSSLESS = tuple((t, j) for t in range(LARGEST_BOUND, 0, -1) for j in range(4)) + ((0, 0),)


@dataclass(frozen=True)
class Target:
    """Exactly one of a compression ratio, a bpp or a PSNR (dB)."""

    ratio: float | None = None
    bpp: float | None = None
    psnr: float | None = None

    def __post_init__(self) -> None:
        given = [(k, v) for k, v in (("ratio", self.ratio), ("bpp", self.bpp), ("psnr", self.psnr)) if v is not None]
        if len(given) != 1:
            raise InputError("give exactly one rate-control target: ratio, bpp or psnr")
        name, value = given[0]
        if not math.isfinite(value) or value <= 0 or (name == "ratio" and value < 1):
            raise InputError(f"{name} must be a positive number{' of at least 1' if name == 'ratio' else ''}, got {value}")

    def __str__(self) -> str:
        if self.ratio is not None:
            return f"ratio {self.ratio:g}:1"
        return f"{self.bpp:g} bpp" if self.bpp is not None else f"PSNR {self.psnr:g} dB"


@dataclass(frozen=True)
class Choice:
    """A coded file and what it achieves."""

    data: bytes
    setting: str  # e.g. "q3" or "max error 4"
    bpp: float
    ratio: float
    psnr: float  # inf when lossless
    #: The setting each ladder's search found (the chosen one among them): where the searches
    #: for a similar image start (``compress_to(..., previous=choice)``).
    found: tuple[str, ...] = ()
    #: The pixels the file decodes to (what the next slice of a series is coded given).
    pixels: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclass
class Ladder:
    """What rate control chooses from: lossy codecs, lowest rate first (a variable-rate codec
    stands for every quality of its grid), and the codec whose residual model codes
    near-lossless (None: lossy only)."""

    lossy: Sequence[tuple[str, Codec]]
    near_lossless: Codec | None = None
    #: Near-lossless candidates coded with optimized quantization (:meth:`medvae.Codec.compress`,
    #: ``optimize``); False: each bound τ is kept on every pixel.
    optimized: bool = True

    @classmethod
    def shipped(cls, model: str = "medvae") -> "Ladder":
        """Every shipped quality of ``model``; near-lossless on the shipped weights with a
        residual model (the ``medvae`` ladder's default)."""
        from medvae import zoo
        from medvae.codec import _shipped

        codecs = [(f"q{q}" if q else model, _shipped(zoo.shipped_path(model, q))) for q in zoo.qualities(model) or [None]]
        near = next((c for _, c in codecs if c.residual is not None), None)
        if near is None and "medvae" in zoo.index():
            near = _shipped(zoo.shipped_path("medvae"))
        return cls(codecs, near if near is not None and near.residual is not None else None)

    @classmethod
    def of(cls, codec: Codec, name: str = "model") -> "Ladder":
        """One codec: its lossy point(s), and near-lossless when it has a residual model."""
        return cls([(name, codec)], codec if codec.residual is not None else None)

    def lossy_ladders(self) -> list[list[tuple[str, Codec, float | None]]]:
        """(label, codec, quality) of every lossy candidate, in ladders searched apart, each
        lowest rate first: the separately trained weights together, and each weights of a
        variable-rate codec on its own quality grid (a codec with alternatives gives one ladder
        per weights, and its labels name the weights)."""
        fixed, ladders = [], []
        for name, codec in self.lossy:
            if not codec.variable_rate:
                fixed.append((name, codec, None))
                continue
            lo, hi = codec.quality_range
            weights = codec.each_weights()
            for alone in weights:
                named = f" (weights {alone.fingerprint[:8]})" if len(weights) > 1 else ""
                grid = (lo + i * QUALITY_GRID for i in range(round((hi - lo) / QUALITY_GRID) + 1))
                ladders.append([(f"quality {q:g}{named}", alone, q) for q in grid])
        return [fixed, *ladders] if fixed else ladders


def compress_to(
    image: np.ndarray, target: Target, ladder: Ladder, *, bits_stored: int = 0, previous: Choice | None = None,
    previous_slice: np.ndarray | Sequence[np.ndarray] | None = None, **kwargs,
) -> Choice:
    """The file ``target`` asks for (see the module docstring); ``kwargs`` go to
    :meth:`medvae.Codec.compress` (metadata, padding value ...). ``previous``: the choice for a
    similar image (the previous slice of a series), where each search starts; it changes how
    many candidates are coded, not the answer on a ladder whose rate rises with its settings.
    ``previous_slice``: the previous slice of this image's series as decoded (``previous.pixels``),
    or the slices before it, nearest first: the near-lossless candidates are then coded given them
    (series coding, formats 9 and 10; the lossy ones alone), and the file decodes with them
    (:meth:`medvae.Codec.decompress`)."""
    bits = metrics.stored_bits(bits_stored, image.dtype)

    coder_of: dict[int, Codec] = {}  # id of a measured Choice's bytes (kept by its cache) -> its codec

    def measure(setting: str, codec: Codec, coded: tuple[bytes, np.ndarray]) -> Choice:
        data, pixels = coded  # the pixels the file decodes to, as its encoder computed them
        choice = Choice(data, setting, metrics.bpp(len(data), image.shape), metrics.compression_ratio(len(data), image.shape, bits),
                        metrics.psnr(image, pixels, bits), pixels=pixels)
        coder_of[id(data)] = codec
        return choice

    # Each candidate is coded at most once (functools.cache), however often it is asked for,
    # and the near-lossless ones share one coding of their base. None is decoded: the encoder
    # computes the pixels every decoder gets (the file's checksum is theirs); the chosen file
    # is decoded once at the end, which checks that.
    def candidates(settings: list[tuple[str, Codec, float | None]]) -> _Candidates:
        """A ladder's candidates; a variable-rate weights' ladder codes every quality through one
        quality coder (its g_a runs once for the image), which also gives a quality's bpp
        without its synthesis transform."""
        coder = functools.cache(lambda: settings[0][1].quality_coder(image, bits_stored=bits_stored, **kwargs))
        files = [
            functools.cache(lambda s=s, c=c, q=q: measure(
                s, c, c.compress_with_pixels(image, bits_stored=bits_stored, **kwargs) if q is None else coder().write(q)))
            for s, c, q in settings
        ]
        bpp = [functools.cache(lambda f=f, q=q: f().bpp if q is None else metrics.bpp(coder().size(q), image.shape))
               for f, (_, _, q) in zip(files, settings)]
        return _Candidates(files, bpp, range(len(files)))

    lossy_ladders = ladder.lossy_ladders()
    ladders = [candidates(settings) for settings in lossy_ladders]
    labels = [[label for label, _, _ in settings] for settings in lossy_ladders]
    if ladder.near_lossless is not None:
        codec = ladder.near_lossless
        base = functools.cache(lambda: codec.bounded_coder(image, bits_stored=bits_stored, previous=previous_slice, **kwargs))
        optimize = ladder.optimized
        near = [functools.cache(lambda t=t, j=j: measure(near_lossless_setting(t, j, optimize), codec, base().write(t, j, optimize and t > 0)))
                for t, j in NEAR_LOSSLESS]
        ladders.append(_Candidates(near, [lambda f=f: f().bpp for f in near], [-math.log(2 * t - j / 2 + 1) for t, j in NEAR_LOSSLESS]))
        labels.append([near_lossless_setting(t, j, optimize) for t, j in NEAR_LOSSLESS])
    starts = [_position(previous, names) if previous else None for names in labels]
    if ladder.near_lossless is not None and target.psnr is not None and starts[-1] is None:
        starts[-1] = _bound_start(image, base().base(1), target.psnr, bits)
    choice, found = _choose(target, image, bits, ladders, starts, lossy=len(lossy_ladders))
    coder_of[id(choice.data)].decompress(choice.data, previous_slice)  # raises BitstreamError unless its pixels are those measured
    return dataclasses.replace(choice, found=tuple(answer.setting for answer in found))


class _Candidates(NamedTuple):
    """A ladder's candidate files and their bpp (each computed when first asked for), and where
    they lie along the axis the search interpolates on (:func:`_first`): the quality grid's
    steps, or −log of near-lossless coding's quantizer step 2τ + 1 (with j of the four passes
    at τ − 1, τ − j/4 stands for τ)."""

    files: list[Callable[[], Choice]]
    bpp: list[Callable[[], float]]
    positions: Sequence[float]


def _position(previous: Choice, labels: list[str]) -> int | None:
    """Where a ladder's search starts: at the setting its search found for ``previous``, else at
    the quality ``previous`` chose, of other weights (``"quality 4.5 (weights …)"``), else None."""
    for setting in previous.found:
        if setting in labels:
            return labels.index(setting)
    unnamed = [label.split(" (weights")[0] for label in labels]
    chosen = previous.setting.split(" (weights")[0]
    return unnamed.index(chosen) if chosen in unnamed else None


def _bound_start(image: np.ndarray, base: np.ndarray, psnr: float, bits: int) -> int:
    """Where a PSNR search over the near-lossless bounds starts without a previous slice: at the
    loosest bound whose PSNR, predicted from the base's error alone, reaches ``psnr``.

    The prediction quantizes r = x − x̃ (image minus base) with the residual layer's step
    2τ + 1 around 0; the layer's network predicts a mean as well, so the file's PSNR is about
    this or higher, and the answer is this bound or one a few codings looser (on a 512² CT slice,
    4 bounds coded for 55 and for 60 dB, where the search from the ends of the 513 coded 9)."""
    residual = np.subtract(image, base, dtype=np.int64).ravel()
    residual = residual[:: max(1, residual.size // 2**18)]  # a quarter million pixels say enough
    peak = 2**bits - 1

    def reaches(bound: int) -> bool:
        error = residual - (2 * bound + 1) * quantize(residual, bound)
        return metrics.psnr_from_mse(float(np.mean(np.square(error, dtype=np.float64))), peak) >= psnr

    bounds = list(range(LARGEST_BOUND, 0, -1))  # loosest first; the predicted PSNR rises along them
    first = bisect.bisect_left(bounds, True, key=reaches)
    return NEAR_LOSSLESS.index((bounds[min(first, len(bounds) - 1)], 0))


def _choose(
    target: Target, image: np.ndarray, bits: int, ladders: list[_Candidates], starts: list[int | None], lossy: int
) -> tuple[Choice, list[Choice]]:
    """The candidate ``target`` asks for (see the module docstring), and every ladder's answer:
    each ladder (the first ``lossy`` are lossy, then near-lossless) is searched on its own
    (:func:`_search`, from its entry in ``starts``), and the best of their answers kept."""
    budget = None
    if target.psnr is None:
        budget = target.bpp if target.bpp is not None else metrics.bpp(image.size * bits / 8 / target.ratio, image.shape)
    found = []
    for candidates, start in zip(ladders, starts):
        i = _search(candidates, target, budget, start)
        if i is not None:
            found.append(candidates.files[i]())
    if target.psnr is not None:
        if not found:
            best = max((candidates.files[-1]() for candidates in ladders[:lossy]), key=lambda c: c.psnr)
            raise InputError(
                f"no setting reaches {target} on this image: the most these weights reach is {best.psnr:.2f} dB "
                f"({best.setting}, {best.bpp:.3f} bpp), and they come without a residual model for near-lossless coding"
            )
        return min(found, key=lambda c: len(c.data)), found
    if not found:
        smallest = min((candidates.files[0]() for candidates in ladders if candidates.files), key=lambda c: c.bpp)
        raise InputError(
            f"no setting reaches {target} on this image: the smallest file is {smallest.bpp:.3f} bpp "
            f"(ratio {smallest.ratio:.1f}:1, {smallest.setting})"
        )
    return max(found, key=lambda c: (c.psnr, -len(c.data))), found


def _search(candidates: _Candidates, target: Target, budget: float | None, start: int | None) -> int | None:
    """The index of a ladder's answer, or None: its first file that reaches the target PSNR, or
    its last file within ``budget`` bpp (searched from the top down on the candidates' bpp, which
    a variable-rate weights' qualities give from their size alone)."""
    files, bpp, positions = candidates
    if target.psnr is not None:
        return _first([lambda f=f: f().psnr for f in files], target.psnr, start, positions)
    n = len(files)
    i = _first([lambda b=b: -math.log(b()) for b in bpp[::-1]], -math.log(budget + 1e-12), None if start is None else n - 1 - start,
               [-p for p in positions[::-1]])
    return None if i is None else n - 1 - i


def near_lossless_setting(max_error: int, tighter_passes: int = 0, optimized: bool = False) -> str:
    """How a near-lossless candidate is reported: ``"max error 5"``, or with passes at τ − 1
    ``"max error 5 (2 of 4 passes at 4)"``; optimized (τ ≥ 1), ``"optimized, step 11"``: the
    quantizer's step 2τ + 1 (the file declares the error it measured)."""
    if optimized and max_error:
        tighter = f" ({tighter_passes} of 4 passes at step {2 * max_error - 1})" if tighter_passes else ""
        return f"optimized, step {2 * max_error + 1}{tighter}"
    tighter = f" ({tighter_passes} of 4 passes at {max_error - 1})" if tighter_passes else ""
    return f"max error {max_error}{tighter}"


def _first(
    values: Sequence[Callable[[], float]], goal: float, start: int | None = None, positions: Sequence[float] | None = None
) -> int | None:
    """The index of the first of ``values`` (each computed when asked: a coding) that reaches
    ``goal``, or None; the values are assumed to rise along the list.

    With ``start`` (the previous slice's answer), that value and its neighbour on the other side
    of ``goal`` are computed first, which settles it when the answer has not moved. Without one,
    the last is computed first, and the first when the last reaches the goal: a ladder that
    cannot meet the target, or meets it everywhere, is settled at once (near-lossless coding for
    a target the lossy weights meet, say). Then each guess is where the curve through the three
    computed values nearest ``goal`` meets it (inverse quadratic interpolation; rate and PSNR
    bend smoothly along a quality grid or the error bounds), else the line through the two
    values that bracket the answer, whichever end has stayed twice weighed half (Illinois), and
    aimed at the side of the answer the previous guess did not fall on. When two guesses have not
    halved the interval, the next one bisects it, so a rough or steeply bent curve costs at most
    about three times bisection's values; smooth curves of 449 take 4–8 where bisection takes 9
    (tests/test_rate_control.py). ``positions`` (rising; default: the indices) place the values
    along the axis on which they are smoothest: for near-lossless bounds, the log of the
    quantizer's step.
    """
    n = len(values)
    positions = range(n) if positions is None else positions
    lo, hi = 0, n  # the answer lies in [lo, hi]; n: none reaches the goal
    computed: dict[int, float] = {}

    def reaches(i: int) -> bool:
        nonlocal lo, hi
        computed[i] = values[i]()
        if computed[i] >= goal:
            hi = min(hi, i)
            return True
        lo = max(lo, i + 1)
        return False

    if start is not None and 0 <= start < n:
        neighbour = start - 1 if reaches(start) else start + 1
        if 0 <= neighbour < n:
            reaches(neighbour)
    elif n and reaches(n - 1):  # the last reaches it: does the first too?
        reaches(0)
    last, weight = None, {True: 1.0, False: 1.0}  # the previous guess's side; Illinois weights
    widths: list[int] = []  # the interval's width before each guess
    while lo < hi:
        x = _guess(computed, goal, lo, hi, weight, positions)
        if len(widths) >= 2 and 2 * (hi - lo) > widths[-2] or not math.isfinite(x):  # two guesses did not halve it: bisect
            guess = (lo + hi) // 2
        else:
            guess = min(hi - 1, max(lo, bisect.bisect_left(positions, x) - (1 if last else 0)))
        widths.append(hi - lo)
        hit = reaches(guess)
        weight = {**weight, not hit: weight[not hit] / 2} if hit == last else {True: 1.0, False: 1.0}
        last = hit
    return lo if lo < n else None


def _guess(
    computed: dict[int, float], goal: float, lo: int, hi: int, weight: dict[bool, float], positions: Sequence[float]
) -> float:
    """The position at which the values reach ``goal``, from those computed (see :func:`_first`)."""
    nearest: list[tuple[float, float]] = []  # (position, value): distinct finite values, nearest the goal first
    for i, v in sorted(computed.items(), key=lambda item: abs(item[1] - goal)):
        if math.isfinite(v) and all(v != w for _, w in nearest):  # (lossless: an infinite PSNR)
            nearest.append((positions[i], v))
    low = positions[lo - 1] if lo > 0 else -math.inf
    high = positions[hi] if hi < len(positions) else math.inf
    if len(nearest) >= 3:
        (x0, y0), (x1, y1), (x2, y2) = nearest[:3]
        x = (x0 * (goal - y1) * (goal - y2) / ((y0 - y1) * (y0 - y2)) + x1 * (goal - y0) * (goal - y2) / ((y1 - y0) * (y1 - y2))
             + x2 * (goal - y0) * (goal - y1) / ((y2 - y0) * (y2 - y1)))
        if low <= x <= high:
            return x
    below, above = computed.get(lo - 1, math.nan), computed.get(hi, math.nan)
    if math.isfinite(below) and math.isfinite(above):
        short, over = (goal - below) * weight[False], (above - goal) * weight[True]
        return low + (high - low) * short / (short + over)
    if len(nearest) >= 2:
        (x0, y0), (x1, y1) = nearest[:2]
        return x0 + (goal - y0) * (x1 - x0) / (y1 - y0)
    return math.nan  # bisect
