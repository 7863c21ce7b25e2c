"""Pixels the model does not code: scanner padding and isolated extreme values.

Scanners store the area outside the field of view as a padding value (DICOM Pixel
Padding Value: often −2000, −3024 or −32768), and slices carry isolated extremes (a metal
fragment, a burned-in marker, one saturated detector pixel). Mapped to [0, 1] with the
rest, either stretches the intensity mapping until the tissue gets a sliver of it. So the
codec takes them out: padding becomes an exact mask, extremes an exact list of
(position, value), both stored beside the entropy-coded strings; the model codes the
remaining pixels over their own range (padding filled with the lowest tissue value,
extremes with the median of their neighbours), and decoding puts the exact values back.

* **Padding**: the given ``padding_value``, or, when none is given, the image's minimum
  if it covers most of the image border and lies far below every other value (a gap of
  at least an eighth of the rest's robust range): the signature of out-of-field padding,
  which noisy air or a dark background does not have. (A perfectly constant background
  that far below the rest is treated the same way: it is then stored exactly.)
* **Extremes**: values more than half the robust range beyond it (the range without the
  ``cap`` lowest and highest values, ``cap`` = 0.01 % of the pixels, 16 at least), when
  there are at most ``cap`` of them; more such pixels are anatomy (a large implant), which
  the model codes as usual.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from medvae.bitstream import inflate
from medvae.errors import BitstreamError

@dataclass
class Exceptions:
    """Padding mask and extreme pixels of one image, with their exact stored values."""

    padding_value: int | None = None
    mask: np.ndarray | None = None  # bool (H, W): True where padding
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # flat positions of extremes
    value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their stored values

    def __bool__(self) -> bool:
        return self.mask is not None or self.index.size > 0

    def restore(self, decoded: np.ndarray, first_row: int = 0) -> np.ndarray:
        """``decoded`` (the image, or its rows from ``first_row`` on) with the padding and
        extreme pixels set back to their exact values (``decoded`` itself when there are none)."""
        if not self:
            return decoded
        out = decoded.copy()
        rows, width = out.shape
        if self.mask is not None:
            out[self.mask[first_row : first_row + rows]] = self.padding_value
        start = first_row * width
        inside = (self.index >= start) & (self.index < start + out.size)
        out.reshape(-1)[self.index[inside] - start] = self.value[inside].astype(out.dtype)
        return out

    def pack(self) -> bytes:
        """The exception block: zlib of (flags, padding value, mask runs, extremes)."""
        parts = [struct.pack("<Bi", int(self.mask is not None), int(self.padding_value or 0))]
        rows = _mask_rows(self.mask) if self.mask is not None else []
        parts += [struct.pack("<I", len(rows)), _varints(rows)]
        order = np.argsort(self.index)
        gaps = np.diff(self.index[order], prepend=0)
        parts += [struct.pack("<I", len(gaps)), _varints(gaps), self.value[order].astype("<i4").tobytes()]
        return zlib.compress(b"".join(parts), 9)

    @classmethod
    def unpack(cls, block: bytes, shape: tuple[int, int]) -> "Exceptions":
        """Parse a block written by :meth:`pack` for an image of ``shape``. Raises :class:`BitstreamError`."""
        try:
            raw = inflate(block, "exception block")
            has_mask, padding_value = struct.unpack_from("<Bi", raw)
            pos = 5
            (n_codes,) = struct.unpack_from("<I", raw, pos)
            codes, pos = _read_varints(raw, pos + 4, n_codes)
            (n_extremes,) = struct.unpack_from("<I", raw, pos)
            gaps, pos = _read_varints(raw, pos + 4, n_extremes)
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
        return cls(padding_value if has_mask else None, mask, index, values)


def split(image: np.ndarray, padding_value: int | None = None) -> tuple[np.ndarray, Exceptions]:
    """The image the model codes, and what it leaves out (see the module docstring)."""
    padding = _padding(image, padding_value)
    mask = None if padding is None else image == padding
    tissue = image[~mask] if mask is not None else image.reshape(-1)
    if tissue.size == 0:  # all padding: nothing for the model to do
        return np.zeros_like(image), Exceptions(padding, mask)
    cap = max(16, image.size // 10_000)  # at most this many extremes (0.01 %, 16 at least)
    k = min(cap, (tissue.size - 1) // 2)
    ordered = np.partition(tissue, [k, tissue.size - 1 - k])
    lo_q, hi_q = int(ordered[k]), int(ordered[tissue.size - 1 - k])  # the range without the cap's worth at each end
    margin = max(0.5 * (hi_q - lo_q), 1.0)
    extreme = (image < lo_q - margin) | (image > hi_q + margin)
    if mask is not None:
        extreme &= ~mask
    index = np.flatnonzero(extreme)
    if index.size > cap:
        index = index[:0]  # many: anatomy, not isolated extremes
    if mask is None and index.size == 0:  # the common case: nothing left out, no copy
        return image, Exceptions()
    keep = np.ones(image.size, bool)
    keep[index] = False
    if mask is not None:
        keep &= ~mask.reshape(-1)
    kept = image.reshape(-1)[keep]
    lo = int(kept.min())
    model_image = image.copy()
    if mask is not None:
        model_image[mask] = lo  # padding as the darkest tissue value: no edge to code
    _fill_from_neighbours(model_image, index, keep.reshape(image.shape))
    return model_image, Exceptions(padding, mask, index.astype(np.int64), image.reshape(-1)[index].astype(np.int64))


def _fill_from_neighbours(image: np.ndarray, index: np.ndarray, usable: np.ndarray) -> None:
    """Give each extreme pixel the median of the usable pixels around it (5×5), so the model
    sees no spike where it sat; the exact value is restored after decoding."""
    h, w = image.shape
    for flat in index.tolist():
        r, c = divmod(flat, w)
        window = image[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3]
        ok = usable[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3]
        image[r, c] = np.median(window[ok]) if ok.any() else image[usable].min()


def _padding(image: np.ndarray, given: int | None) -> int | None:
    """The padding value: ``given`` if it occurs, else the detected one, else None."""
    if given is not None:
        return int(given) if (image == given).any() else None
    low = image.min()
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if (border == low).mean() < 0.5:
        return None
    rest = image[image != low]
    if rest.size == 0:
        return None
    gap = int(rest.min()) - int(low)
    bottom, top = np.quantile(rest, [0.001, 0.999])  # robust: one extreme pixel must not hide the gap
    return int(low) if gap >= max(1.0, (top - bottom) / 8) else None


def _mask_rows(mask: np.ndarray) -> list[int]:
    """The mask as codes: per row, the columns where it switches (from False before column
    0), as zigzag differences from the previous row's when their number is the same (code
    0, then the differences), else as count + 1 and the columns. A field-of-view circle
    changes by a pixel or two from row to row, so its codes are nearly all 0, 1 and 2.
    """
    codes: list[int] = []
    previous = np.zeros(0, np.int64)
    for row in mask:
        switches = np.flatnonzero(np.diff(row.astype(np.int8), prepend=np.int8(0)))
        if len(switches) == len(previous) and len(switches):
            delta = switches - previous
            codes += [0, *((2 * delta) ^ (delta >> 63)).tolist()]  # zigzag: small either way
        else:
            codes += [len(switches) + 1, *switches.tolist()]
        previous = switches
    return codes


def _mask_from_rows(codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_mask_rows`. Raises :class:`BitstreamError` on codes that do not fit ``shape``."""
    h, w = shape
    mask = np.zeros(shape, bool)
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
        mask[r] = np.cumsum(toggles[:w]) % 2 == 1
        previous = switches
    if pos != len(codes):
        raise BitstreamError("corrupted exception block (padding mask too long)")
    return mask


def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in np.asarray(values, np.int64).tolist():
        if v < 0:
            raise ValueError("varints are unsigned")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(raw: bytes, pos: int, n: int) -> tuple[np.ndarray, int]:
    values = []
    for _ in range(n):
        v = shift = 0
        while True:
            byte = raw[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
            if shift > 63:
                raise ValueError("varint too long")
        values.append(v)
    return np.asarray(values, np.int64), pos
