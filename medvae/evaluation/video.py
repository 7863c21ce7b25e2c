"""Video codecs on CT series: x264 and x265 (through Debian's ``ffmpeg``), a series coded as
a sequence of frames, so inter-slice prediction can exploit how alike adjacent slices are.

Families (``evaluate.py --codecs``; the knob is x264's / x265's CRF):

* ``x264``: H.264 at 10 bits, default GOP (inter prediction), preset medium.
* ``x264-ssim``: the same with ``--tune ssim`` (adaptive quantization mode 2, psychovisual
  optimizations off) and ``psy-rd 0``. The SSIM-weighted rate-distortion optimization of the
  literature (luminance weight 1.15, contrast/structure 0.95) changes x264's RDO cost
  function in its source; no x264 option sets those weights, so ``--tune ssim`` is as close
  as an unmodified x264 gets.
* ``x264-8bit``: H.264 at 8 bits (the depth most deployments use).
* ``x265``: HEVC Main 12 (4:0:0, Range Extensions), inter prediction; ``x265=lossless`` is
  its mathematically lossless mode.
* ``x265-intra``: the same, every frame intra (``keyint=1``): HEVC as a still-image codec.

**Mapping.** Encoders take unsigned samples of ``depth`` bits. A series with stored values
in ``[lo, hi]`` (``lo`` and ``hi`` over the whole series, e.g. int16 HU −1024…3071) is coded
as ``s = (v − lo) >> k`` with ``k`` = the bits by which ``hi − lo`` exceeds ``depth`` (0
for a 12-bit CT range at 12 bits: the mapping is exact and lossless coding stays lossless),
and decoded as ``v = (s << k) + lo + ⌊2^k / 2⌋`` clipped to ``[lo, hi]`` (the middle of the
dropped bits). PSNR is computed on these decoded integers against the stored ones, at the
series' native bit depth, like every other codec. A 17-byte header (``lo``, ``hi``, ``k``,
dtype, shape) precedes the elementary stream and counts in the rate; the per-slice rate is
the stream's bytes over the slices.

H.264 in ffmpeg codes 4:0:0 but its decoder returns 4:2:0 frames whose chroma is empty: we
read the luma plane as decoded, without a colour conversion (which would rescale the range).
x265 3.5 (Debian 12) aborts with heap corruption on 4:0:0 frames whose width is not a
multiple of its 64-pixel coding tree unit in lossy modes, so its frames are padded to
multiples of 64 by repeating the last row and column (nothing for a 512×512 slice) and
cropped after decoding.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from typing import ClassVar

import numpy as np

from medvae.errors import InputError
from medvae.evaluation.codecs import Family, ImageCodec, check_depth, numeric_sweep, register_family

_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16))
_HEADER = struct.Struct("<iiBBBHHH")  # lo, hi, shift, dtype, depth, slices, rows, columns


def ffmpeg() -> str:
    """The ``ffmpeg`` executable, or an :class:`InputError` that says how to get it."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise InputError("the video codecs need ffmpeg with libx264/libx265 on PATH (Debian: apt-get install ffmpeg)")
    return path


def _run(args: list[str], data: bytes) -> bytes:
    done = subprocess.run([ffmpeg(), "-v", "error", "-nostdin", *args], input=data, capture_output=True)
    if done.returncode:
        raise InputError(f"ffmpeg failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
    return done.stdout


class VideoCodec(ImageCodec):
    """One CRF point of a video encoder: a series is one stream (:meth:`encode_series`); one
    image is a series of one frame."""

    series: ClassVar[bool] = True
    knob = "crf"
    encoder: ClassVar[str] = ""  # ffmpeg's encoder name
    container: ClassVar[str] = ""  # ffmpeg's raw elementary-stream format
    depth: ClassVar[int] = 8  # sample bits handed to the encoder
    options: ClassVar[tuple[str, ...]] = ()  # encoder options besides the rate
    multiple: ClassVar[int] = 1  # frames are padded (last row and column repeated) to a multiple of this

    def __init__(self, value: float | None = None, lossless: bool = False):
        super().__init__(None if lossless else float(value), lossless=lossless)

    @property
    def label(self) -> str:
        return f"{self.family}[lossless]" if self.lossless else f"{self.family}[crf={self.value:g}]"

    def _rate_options(self) -> list[str]:
        return ["-crf", f"{self.value:g}"]

    def _pixel_format(self) -> str:
        return {8: "gray", 10: "gray10le", 12: "gray12le"}[self.depth]

    def _decoded_format(self) -> tuple[str, bool]:
        """(ffmpeg's pixel format of the decoded frames, whether they carry 4:2:0 chroma planes)."""
        return self._pixel_format(), False

    def notes(self, image: np.ndarray, bits_stored: int | None = None) -> str:
        shift = _shift(int(image.min()), int(image.max()), self.depth)
        return f"coded at {self.depth} bits: {shift} least significant bit(s) dropped" if shift else ""

    def encode(self, image: np.ndarray, bits_stored: int | None = None) -> bytes:
        return self.encode_series(np.asarray(image)[None], bits_stored)

    def decode(self, data: bytes) -> np.ndarray:
        return self.decode_series(data)[0]

    def encode_series(self, volume: np.ndarray, bits_stored: int | None = None) -> bytes:
        """Code a (slices, rows, columns) series of stored integers as one stream."""
        volume = np.asarray(volume)
        if volume.ndim != 3 or volume.shape[0] == 0 or volume.shape[0] > 65535:
            raise InputError(f"expected a series of 1 to 65535 slices (slices, rows, columns), got shape {volume.shape}")
        check_depth(volume.reshape(-1, volume.shape[-1]), bits_stored)
        lo, hi = int(volume.min()), int(volume.max())
        shift = _shift(lo, hi, self.depth)
        if self.lossless and shift:
            raise InputError(f"{self.label} codes {self.depth} bits; this series spans {hi - lo + 1} values ({lo}..{hi})")
        n, h, w = volume.shape
        ph, pw = _padded(h, self.multiple), _padded(w, self.multiple)
        padded = np.pad(volume, ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
        samples = ((padded.astype(np.int64) - lo) >> shift).astype("<u2" if self.depth > 8 else np.uint8)
        stream = _run(
            ["-f", "rawvideo", "-pix_fmt", self._pixel_format(), "-s", f"{pw}x{ph}", "-r", "25", "-i", "pipe:",
             "-c:v", self.encoder, "-pix_fmt", self._pixel_format(), "-preset", "medium", *self._rate_options(),
             *self.options, "-f", self.container, "pipe:"],
            samples.tobytes(),
        )
        dtype = _DTYPES.index(volume.dtype)
        return _HEADER.pack(lo, hi, shift, dtype, self.depth, n, h, w) + stream

    def decode_series(self, data: bytes) -> np.ndarray:
        """The series :meth:`encode_series` coded, in its original dtype."""
        if len(data) <= _HEADER.size:
            raise InputError("truncated video stream")
        lo, hi, shift, dtype, depth, n, h, w = _HEADER.unpack_from(data)
        if dtype >= len(_DTYPES) or depth != self.depth:
            raise InputError("not a stream of this codec")
        fmt, chroma = self._decoded_format()
        raw = np.frombuffer(_run(["-f", self.container, "-i", "pipe:", "-f", "rawvideo", "-pix_fmt", fmt, "pipe:"],
                                 data[_HEADER.size :]), "<u2" if self.depth > 8 else np.uint8)
        ph, pw = _padded(h, self.multiple), _padded(w, self.multiple)
        frame = ph * pw + (2 * (-(-ph // 2)) * (-(-pw // 2)) if chroma else 0)
        if raw.size != n * frame:
            raise InputError(f"decoded {raw.size} samples where {n} frames of {pw}x{ph} need {n * frame}")
        luma = raw.reshape(n, frame)[:, : ph * pw].reshape(n, ph, pw)[:, :h, :w].astype(np.int64)
        values = (luma << shift) + lo + ((1 << shift) >> 1)
        return np.clip(values, lo, hi).astype(_DTYPES[dtype])


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _shift(lo: int, hi: int, depth: int) -> int:
    """Least significant bits to drop so that ``hi − lo`` fits ``depth`` bits."""
    return max(0, (hi - lo).bit_length() - depth)


class X264(VideoCodec):
    family = "x264"
    encoder, container, depth = "libx264", "h264", 10

    def _decoded_format(self) -> tuple[str, bool]:
        return ("yuv420p10le" if self.depth > 8 else "yuv420p"), True


class X264SSIM(X264):
    family = "x264-ssim"
    options = ("-tune", "ssim", "-x264-params", "psy-rd=0,0")


class X264Bit8(X264):
    family = "x264-8bit"
    depth = 8


class X265(VideoCodec):
    family = "x265"
    encoder, container, depth = "libx265", "hevc", 12
    intra: ClassVar[bool] = False
    multiple = 64  # x265 3.5 corrupts its heap on 4:0:0 frames of other widths (lossy modes)

    def _rate_options(self) -> list[str]:
        params = ["log-level=error"] + (["keyint=1"] if self.intra else [])
        params += ["lossless=1"] if self.lossless else [f"crf={self.value:g}"]
        return ["-x265-params", ":".join(params)]


class X265Intra(X265):
    family = "x265-intra"
    intra = True


#: CRF sweeps: from about JPEG 2000 at 0.3 bpp up to about 60 dB on 12-bit CT.
X264_CRF = (4, 10, 16, 22, 28, 34)
X265_CRF = (0, 6, 12, 18, 24, 30)

register_family(Family("x264", numeric_sweep(X264, X264_CRF, lossless=False), "H.264 (x264), 10 bits, inter"))
register_family(Family("x264-ssim", numeric_sweep(X264SSIM, X264_CRF, lossless=False), "H.264 (x264), 10 bits, --tune ssim, psy-rd 0"))
register_family(Family("x264-8bit", numeric_sweep(X264Bit8, X264_CRF, lossless=False), "H.264 (x264), 8 bits, inter"))
register_family(Family("x265", numeric_sweep(X265, X265_CRF, lossless=True), "HEVC Main 12 (x265), inter; lossless"))
register_family(Family("x265-intra", numeric_sweep(X265Intra, X265_CRF, lossless=True), "HEVC Main 12 (x265), intra only; lossless"))
