"""Pixels the model does not code: scanner padding and isolated extreme values.

Scanners store the area outside the field of view as a padding value (DICOM Pixel
Padding Value: often −2000, −3024 or −32768), and slices carry isolated extremes (a metal
fragment, a burned-in marker, one saturated detector pixel). Mapped to [0, 1] with the
rest, either stretches the intensity mapping until the tissue gets a sliver of it. So the
codec takes them out: padding becomes an exact mask, extremes an exact list of
(position, value), both stored beside the entropy-coded strings; the model codes the
remaining pixels over their own range (padding filled with the lowest tissue value,
extremes with the median of their neighbours), and decoding puts the exact values back.

* **Padding**: the given ``padding_value``, or, when none is given, the border's most
  frequent value if it covers most of the image border, no more than a few isolated pixels
  lie below it, and it lies far below every other value (a gap of at least an eighth of
  the rest's robust range): the signature of out-of-field padding, which noisy air or a
  dark background does not have. (A perfectly constant background that far below the
  rest is treated the same way: it is then stored exactly.)
* **Extremes**: values more than half the robust range beyond it (the range without the
  ``cap`` lowest and highest values, ``cap`` = 0.01 % of the pixels, 16 at least), when
  there are at most ``cap`` of them; more such pixels are anatomy (a large implant), which
  the model codes as usual.
"""

from __future__ import annotations

import struct
import zlib
import numpy as np

from medvae import varint
from medvae.bitstream import inflate
from medvae.errors import BitstreamError
from medvae.intensity import default_value_range

#: Pixels per band when a statistic or a mask is computed band by band of rows: image-sized
#: temporaries (a 8192×8192 slice's boolean mask alone is 64 MiB) never exist.
BAND_PIXELS = 2**18
#: Popcount of every byte, to count a packed mask's pixels.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


class Exceptions:
    """Padding mask and extreme pixels of one image, with their exact stored values.

    The mask is kept packed, 8 pixels a byte (:func:`numpy.packbits` along rows). The
    encoder's instance also knows what the model sees in their place (:meth:`fill`) and
    the range of that model image (``value_range``); neither is stored in the container.
    """

    def __init__(
        self, padding_value: int | None = None, mask: np.ndarray | None = None,
        index: np.ndarray | None = None, value: np.ndarray | None = None,
    ):
        self.padding_value = padding_value
        self.bits: np.ndarray | None = None if mask is None else np.packbits(np.asarray(mask, bool), axis=1)
        self.width = 0 if mask is None else int(np.shape(mask)[1])  # the image's width (set by find and unpack)
        self.index = np.zeros(0, np.int64) if index is None else np.asarray(index, np.int64)  # flat positions of extremes
        self.value = np.zeros(0, np.int64) if value is None else np.asarray(value, np.int64)  # their stored values
        self.fill_value = 0  # encoder side: what the model sees where the padding is
        self.fills = np.zeros(0, np.int64)  # encoder side: what it sees at each extreme
        self.value_range: tuple[int, int] | None = None  # encoder side: the range of the image the model sees

    def __bool__(self) -> bool:
        return self.bits is not None or self.index.size > 0

    def mask_rows(self, r0: int, r1: int) -> np.ndarray:
        """The padding mask's rows ``r0:r1`` (bool; all False without a mask)."""
        return np.unpackbits(self.bits[r0:r1], axis=1, count=self.width).view(bool)

    @property
    def mask(self) -> np.ndarray | None:
        """The whole padding mask (bool (H, W): True where padding), or None."""
        return None if self.bits is None else self.mask_rows(0, self.bits.shape[0])

    @property
    def padding_pixels(self) -> int:
        return 0 if self.bits is None else int(_POPCOUNT[self.bits].sum())

    def exact(self, shape: tuple[int, int]) -> np.ndarray | None:
        """Where the decoder restores the image exactly (padding and extreme pixels), as a bool
        mask of ``shape``, or None where there is nothing."""
        if not self:
            return None
        exact = self.mask if self.bits is not None else np.zeros(shape, bool)
        exact.reshape(-1)[self.index] = True
        return exact

    def restore(self, decoded: np.ndarray, first_row: int = 0) -> np.ndarray:
        """``decoded`` (the image, or its rows from ``first_row`` on) with the padding and
        extreme pixels set back to their exact values (``decoded`` itself when there are none)."""
        if not self:
            return decoded
        out = decoded.copy()
        rows, width = out.shape
        if self.bits is not None:
            out[self.mask_rows(first_row, first_row + rows)] = self.padding_value
        start = first_row * width
        inside = (self.index >= start) & (self.index < start + out.size)
        out.reshape(-1)[self.index[inside] - start] = self.value[inside].astype(out.dtype)
        return out

    def fill(self, region: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``region`` = ``image[np.ix_(rows, cols)]`` (sorted rows and columns, repeats allowed)
        made what the model codes: padding set to :attr:`fill_value`, extremes to their
        :attr:`fills`. Changes ``region`` in place and returns it."""
        if self.bits is not None:
            region[self.mask_rows(int(rows[0]), int(rows[-1]) + 1)[np.ix_(rows - rows[0], cols)]] = self.fill_value
        if self.index.size:
            r, c = np.divmod(self.index, self.width)
            for i in np.flatnonzero((r >= rows[0]) & (r <= rows[-1]) & (c >= cols[0]) & (c <= cols[-1])).tolist():
                region[np.ix_(rows == r[i], cols == c[i])] = self.fills[i]
        return region

    def pack(self) -> bytes:
        """The exception block: zlib of (flags, padding value, mask runs, extremes)."""
        parts = [struct.pack("<Bi", int(self.bits is not None), int(self.padding_value or 0))]
        rows = _mask_rows(self) if self.bits is not None else []
        parts += [struct.pack("<I", len(rows)), varint.write(rows)]
        order = np.argsort(self.index)
        gaps = np.diff(self.index[order], prepend=0)
        parts += [struct.pack("<I", len(gaps)), varint.write(gaps), self.value[order].astype("<i4").tobytes()]
        return zlib.compress(b"".join(parts), 9)

    @classmethod
    def unpack(cls, block: bytes, shape: tuple[int, int]) -> "Exceptions":
        """Parse a block written by :meth:`pack` for an image of ``shape``. Raises :class:`BitstreamError`."""
        try:
            raw = inflate(block, "exception block")
            has_mask, padding_value = struct.unpack_from("<Bi", raw)
            pos = 5
            (n_codes,) = struct.unpack_from("<I", raw, pos)
            codes, pos = varint.read(raw, pos + 4, n_codes)
            (n_extremes,) = struct.unpack_from("<I", raw, pos)
            gaps, pos = varint.read(raw, pos + 4, n_extremes)
            values = np.frombuffer(raw[pos : pos + 4 * n_extremes], "<i4").astype(np.int64)
            if len(values) != n_extremes or pos + 4 * n_extremes != len(raw):
                raise ValueError("length mismatch")
        except (zlib.error, struct.error, ValueError, IndexError) as exc:
            raise BitstreamError(f"corrupted exception block ({exc})") from None
        size = shape[0] * shape[1]
        index = np.cumsum(gaps)
        if index.size and (index[-1] >= size or (np.diff(index) <= 0).any()):
            raise BitstreamError("corrupted exception block (extreme pixel outside the image)")
        mask = _mask_from_rows(codes, shape) if has_mask else None
        return _with_mask(cls(padding_value if has_mask else None, None, index, values), mask, shape[1])


def find(image: np.ndarray, padding_value: int | None = None) -> Exceptions:
    """What the model leaves out of ``image`` (see the module docstring), with what it sees
    there instead and the range of the image it codes (``value_range``).

    Every statistic comes from the image's histogram, built band by band, and the order
    statistics read from it are the exact values :func:`numpy.partition` would give: so a
    slice of any size costs a 65,536-bin histogram and a packed mask, not image-sized copies.
    """
    counts, offset = _histogram(image)
    padding = _padding(image, padding_value, counts, offset)
    tissue = counts.copy()
    if padding is not None:
        tissue[padding - offset] = 0
    n = int(tissue.sum())
    if padding is None:
        mask = None
    else:
        mask = np.empty((image.shape[0], -(-image.shape[1] // 8)), np.uint8)
        for r0, r1 in _bands(image):
            mask[r0:r1] = np.packbits(image[r0:r1] == padding, axis=1)
    if n == 0:  # all padding: nothing for the model to do
        out = _with_mask(Exceptions(padding), mask, image.shape[1])
        out.value_range = (0, 1)
        return out
    cap = max(16, image.size // 10_000)  # at most this many extremes (0.01 %, 16 at least)
    k = min(cap, (n - 1) // 2)
    lo_q, hi_q = _kth(tissue, k) + offset, _kth(tissue, n - 1 - k) + offset  # the range without the cap's worth at each end
    margin = max(0.5 * (hi_q - lo_q), 1.0)
    values = np.arange(tissue.size) + offset
    beyond = (values < lo_q - margin) | (values > hi_q + margin)
    n_extremes = int(tissue[beyond].sum())
    if n_extremes > cap:
        n_extremes = 0  # many: anatomy, not isolated extremes
    if padding is None and n_extremes == 0:  # the common case: nothing left out
        return Exceptions()
    index = _positions(image, lo_q - margin, hi_q + margin, padding) if n_extremes else np.zeros(0, np.int64)
    kept = np.flatnonzero(tissue * ~beyond if n_extremes else tissue) + offset
    out = _with_mask(Exceptions(padding, None, index, image.reshape(-1)[index]), mask, image.shape[1])
    out.fill_value = int(kept[0])  # padding as the darkest tissue value: no edge to code
    out.fills = _neighbour_medians(image, index, padding, out.fill_value)
    lo, hi = int(kept[0]), int(kept[-1])
    out.value_range = (lo, hi) if hi > lo else default_value_range(np.array([lo], image.dtype))
    return out


def split(image: np.ndarray, padding_value: int | None = None) -> tuple[np.ndarray, Exceptions]:
    """The image the model codes, made whole, and what it leaves out (see :func:`find`,
    which the codec uses: it reads the model image tile by tile instead)."""
    exceptions = find(image, padding_value)
    if not exceptions:
        return image, exceptions
    rows, cols = np.arange(image.shape[0]), np.arange(image.shape[1])
    return exceptions.fill(image.copy(), rows, cols), exceptions


def _with_mask(exceptions: Exceptions, bits: np.ndarray | None, width: int) -> Exceptions:
    exceptions.bits, exceptions.width = bits, width
    return exceptions


def _bands(image: np.ndarray) -> list[tuple[int, int]]:
    """Row bands of about :data:`BAND_PIXELS` pixels covering the image."""
    step = max(1, BAND_PIXELS // max(1, image.shape[1]))
    return [(r, min(r + step, image.shape[0])) for r in range(0, image.shape[0], step)]


def _histogram(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(count of every value of the dtype, the value of bin 0)."""
    info = np.iinfo(image.dtype)
    counts = np.zeros(int(info.max) - int(info.min) + 1, np.int64)
    for r0, r1 in _bands(image):
        band = image[r0:r1].astype(np.int32)
        band -= int(info.min)
        counts += np.bincount(band.reshape(-1), minlength=counts.size)
    return counts, int(info.min)


def _kth(counts: np.ndarray, k: int) -> int:
    """The bin of the ``k``-th smallest value (0-based) of what ``counts`` counts."""
    return int(np.searchsorted(np.cumsum(counts), k, side="right"))


def _quantile(counts: np.ndarray, q: float) -> float:
    """``numpy.quantile`` (linear method) of what ``counts`` counts, as bin numbers."""
    n = int(counts.sum())
    virtual = q * (n - 1)
    below = int(np.floor(virtual))
    a, b = _kth(counts, below), _kth(counts, min(below + 1, n - 1))
    t = virtual - below
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # numpy's _lerp


def _positions(image: np.ndarray, low: float, high: float, padding: int | None) -> np.ndarray:
    """Flat positions of the pixels below ``low`` or above ``high`` that are not padding."""
    found = []
    for r0, r1 in _bands(image):
        band = image[r0:r1]
        beyond = (band < low) | (band > high)
        if padding is not None:
            beyond &= band != padding
        found.append(np.flatnonzero(beyond) + r0 * image.shape[1])
    return np.concatenate(found).astype(np.int64)


def _neighbour_medians(image: np.ndarray, index: np.ndarray, padding: int | None, fallback: int) -> np.ndarray:
    """What each extreme pixel becomes for the model: the median of the usable pixels
    around it (5×5; not padding, not another extreme), so the model sees no spike where
    it sat, or ``fallback`` (the darkest tissue value) when none is usable; the exact
    value is restored after decoding."""
    h, w = image.shape
    extremes = set(index.tolist())
    fills = np.zeros(index.size, np.int64)
    for i, flat in enumerate(index.tolist()):
        r, c = divmod(flat, w)
        rows, cols = range(max(0, r - 2), min(h, r + 3)), range(max(0, c - 2), min(w, c + 3))
        usable = [int(image[y, x]) for y in rows for x in cols if y * w + x not in extremes and image[y, x] != padding]
        # the value an int array stores when given the float median: truncated toward zero
        fills[i] = int(np.median(np.array(usable, image.dtype))) if usable else fallback
    return fills


def _padding(image: np.ndarray, given: int | None, counts: np.ndarray, offset: int) -> int | None:
    """The padding value: ``given`` if it occurs, else the detected one, else None.

    The candidate is the border's most frequent value; it is padding when it covers most of
    the border, at most a few pixels lie below it (isolated extremes, which must not hide the
    padding) and a wide gap separates it from the rest.
    """
    if given is not None:
        present = 0 <= int(given) - offset < counts.size and counts[int(given) - offset] > 0
        return int(given) if present else None
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    values, frequency = np.unique(border, return_counts=True)
    low = int(values[np.argmax(frequency)]) - offset  # the smallest of equally frequent values
    if frequency.max() < 0.5 * border.size or counts[:low].sum() > max(16, image.size // 10_000):
        return None
    rest = counts.copy()
    rest[low] = 0
    above = rest.copy()
    above[:low] = 0
    if not above.any():
        return None
    gap = _kth(above, 0) - low
    bottom, top = _quantile(rest, 0.001), _quantile(rest, 0.999)  # robust: one extreme pixel must not hide the gap
    return int(low + offset) if gap >= max(1.0, (top - bottom) / 8) else None


def _mask_rows(exceptions: Exceptions) -> list[int]:
    """The mask as codes: per row, the columns where it switches (from False before column
    0), as zigzag differences from the previous row's when their number is the same (code
    0, then the differences), else as count + 1 and the columns. A field-of-view circle
    changes by a pixel or two from row to row, so its codes are nearly all 0, 1 and 2.
    """
    codes: list[int] = []
    previous = np.zeros(0, np.int64)
    for r in range(exceptions.bits.shape[0]):
        row = exceptions.mask_rows(r, r + 1)[0]
        switches = np.flatnonzero(np.diff(row.astype(np.int8), prepend=np.int8(0)))
        if len(switches) == len(previous) and len(switches):
            delta = switches - previous
            codes += [0, *((2 * delta) ^ (delta >> 63)).tolist()]  # zigzag: small either way
        else:
            codes += [len(switches) + 1, *switches.tolist()]
        previous = switches
    return codes


def _mask_from_rows(codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_mask_rows`, packed as :attr:`Exceptions.bits`. Raises
    :class:`BitstreamError` on codes that do not fit ``shape``."""
    h, w = shape
    mask = np.zeros((h, -(-w // 8)), np.uint8)
    previous = np.zeros(0, np.int64)
    pos = 0
    codes = codes.tolist()
    for r in range(h):
        if pos >= len(codes):
            raise BitstreamError("corrupted exception block (padding mask too short)")
        head, pos = codes[pos], pos + 1
        n = len(previous) if head == 0 else head - 1
        values = np.asarray(codes[pos : pos + n], np.int64)
        pos += n
        if len(values) != n or (head == 0 and n == 0):
            raise BitstreamError("corrupted exception block (padding mask)")
        switches = previous + ((values >> 1) ^ -(values & 1)) if head == 0 else values
        if n and (switches.min() < 0 or switches.max() >= w or (np.diff(switches) <= 0).any()):
            raise BitstreamError("corrupted exception block (padding mask outside the image)")
        toggles = np.zeros(w + 1, np.int8)
        toggles[switches] = 1
        mask[r] = np.packbits(np.cumsum(toggles[:w]) % 2 == 1)
        previous = switches
    if pos != len(codes):
        raise BitstreamError("corrupted exception block (padding mask too long)")
    return mask
