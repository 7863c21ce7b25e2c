"""The ``.mvae`` container: a small binary header, the entropy-coded strings, two CRCs.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"MVAE"
    4       1     format version (3; 8 with a residual layer, 9 with one that reads the
                  previous slice of a series, 10 the two previous slices, 15 to 17 the
                  same with an adaptation of the residual laws that names their family,
                  18 to 20 those coded with optimized quantization, 21 to 26 series files
                  whose base latent is coded against the previous slice's, 27 to 29 slices
                  coded alone whose base latent has another step than the unit;
                  6 from a variable-rate model, 11 from one with a correction block;
                  1, 2, 4, 5, 7 and 12 to 14 are still read)
    5       1     dtype code (0 uint8, 1 uint16, 2 int16)
    6       1     bits stored (0 = not known)
    7       1     length n of the model name
    8       n     model name (ASCII, a registered family, e.g. "medvae")
    ...     8     weights fingerprint (formats 2, 3: of the state dict and exact plan,
                  :func:`medvae.checkpoint.exact_fingerprint`; format 1: of the state dict)
    ...     4+4   image height, width (u32)
    ...     4+4   intensity mapping lo, hi (i32): lo maps to 0.0 and hi to 1.0
    ...     2+2   latent shape handed to ``model.decompress`` (u16)
    ...     2     number of strings G (u16; formats 1 and 2: 1 byte)
    ...     4     formats 2–7: CRC-32 of the decoded pixels (the encoder's own exact
                  reconstruction, little-endian bytes); the decoder checks its result
    ...     2+2   formats 5, 6, 11: the quality the variable-rate model coded at (u16, in
                  1/256: :mod:`medvae.models.gain`), and the PSNR the encoder measured
                  (u16, in 1/100 dB at the bits stored; 65535 = identical pixels)
    ...           G × (u32 length, bytes): format 3: each entropy-coded latent (y, then
                  z for hyperpriors) in bands of whole rows, all channels, of at most
                  2^18 symbols (:data:`medvae.exact.twin.CHUNK`; one row when a row holds
                  more); formats 1, 2: one string per latent
    ...     4     formats 2, 3: length e of the exception block (u32, 0 when none)
    ...     e     exceptions: padding mask and extreme pixels with their exact values
                  (:mod:`medvae.exceptions`), restored after the model's decode
    ...     82    format 11: the correction of the reconstruction (:mod:`medvae.correction`:
                  its coefficients, applied before the exceptions are restored)
    ...           formats 4, 7, 8, 9 and 10, the residual layer (:mod:`medvae.residual`): u16 error
                  bound τ (0 = lossless), formats 7 to 10: u8 count j of the first passes
                  coded with bound τ − 1 (format 7: 1 to 3; formats 8 to 10: 0 to 3), formats 9
                  and 10: u32 CRC-32 of the previous slice's pixels (a series residual model reads
                  them), format 10: u32 CRC-32 of the pixels of the slice before that (equal to
                  the previous one's where the previous slice is its series' first or key slice,
                  which the model then reads twice), 8-byte
                  residual model fingerprint, u16 count R, R × (u32 length, bytes) of
                  strings; the pixel CRC is then that of the final image (base plus
                  residual). Format 8 codes under bounded laws (:mod:`medvae.residual.folding`;
                  two strings: the lane rANS stream of :mod:`medvae.residual.rans`, then the
                  escaped values; formats 12 to 17, laid out as 8, 9 and 10, add a third:
                  the adaptation of :mod:`medvae.residual.adaptation`, from format 15 on
                  with a first byte naming each pass's law); formats 4 and 7 with
                  CompressAI's tables, in chunks. Formats 18, 19 and 20 (optimized
                  coding, laid out as 15, 16 and 17) add, after the count j, the u16 bound τ
                  of the quantizer (step 2τ + 1): the first u16 is then the largest error
                  of the decoded pixels, which the encoder measured; their residual layer
                  has four strings, the fourth each pass's reconstruction offset. Formats
                  21 to 26 are 9, 10, 16, 17, 19 and 20 whose base latent y is coded against
                  the previous slice's (:mod:`medvae.prediction`): after the previous slices'
                  CRCs, u16 length and the prediction block (a nibble per channel of y and
                  range of its table index, then, where y has another step than the unit,
                  a byte: that step in quarters). Formats 27, 28 and 29 are 8, 15 and 18
                  (a slice coded alone) whose y has another step than the unit: after the
                  count j (and the quantizer's bound), u8 that step in quarters
    ...     4     length m of the metadata block (u32, 0 when absent)
    ...     m     metadata: opaque bytes the caller attaches (the command line stores the
                  source DICOM header there, so decoding can write DICOM back)
    end-4   4     CRC-32 of every byte before it

Formats 2 and 3 are written by the exact coder (:mod:`medvae.exact`): every machine
decodes them to the same pixels, and the pixel CRC turns any disagreement into an error
instead of a silently different image. Format 3 splits long latents into row bands so that
a decoder's guarded buffer (:func:`medvae.exact.twin.guarded`) stays small for any image
size, and a latent can be decoded band by band; for latents of at most 2^18 symbols (a 512×512 slice has 98,304) its bytes are
those of format 2 apart from the version and the wider string count. Format 1 (no pixel
CRC) was written by the float coder of earlier releases. The header costs about 55 bytes plus the model name; evaluation
counts it in bpp.
``Codec.compress`` attaches no metadata unless asked, so measured rates are image-only.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from medvae import correction
from medvae.errors import BitstreamError

MAGIC = b"MVAE"
#: y's quantization step, in quarters of a unit (:mod:`medvae.prediction`): 4 (the unit) in every
#: file but a series slice's (its prediction block records it) and a noisy slice's coded alone
#: (formats 27 to 29 record it in the header).
UNIT_STEP = 4
#: The steps a file may record (in quarters: 1 to 4 units).
STEPS = range(UNIT_STEP, 4 * UNIT_STEP + 1)
FORMAT_VERSION = 3
#: The format of files with a residual layer (lossless and near-lossless coding).
RESIDUAL_VERSION = 4
#: Format 4 whose first passes keep the bound τ − 1 (rate control's steps between two bounds).
TIGHTER_PASSES_VERSION = 7
#: The residual layer under bounded laws (the mass beyond a pixel's possible values folded onto
#: them, :mod:`medvae.residual.folding`): what this release writes for lossless and near-lossless.
BOUNDED_RESIDUAL_VERSION = 8
#: Versions with a residual layer, and those whose layer records tighter passes.
#: Format 8 from a series residual model: the slice is coded given the previous slice of its
#: series, whose pixel CRC the file records (a decoder given another slice refuses it).
SERIES_RESIDUAL_VERSION = 9
#: Format 9 from a residual model that reads the two previous slices of a series: it also
#: records the pixel CRC of the slice before the previous one.
TWO_PREVIOUS_VERSION = 10
#: Formats 12, 13 and 14 are formats 8, 9 and 10 whose residual layer has a third string: the
#: per-image adaptation of its laws the encoder fitted (:mod:`medvae.residual.adaptation`).
_UNADAPTED = (BOUNDED_RESIDUAL_VERSION, SERIES_RESIDUAL_VERSION, TWO_PREVIOUS_VERSION)
#: Formats 15, 16 and 17 are 12, 13 and 14 whose adaptation also names each pass's law (the
#: Laplace or the mixed law, :data:`medvae.residual.tables.LAWS`): what the encoder writes now.
LAW_VERSIONS = {version + 7: version for version in _UNADAPTED}
#: Formats 18, 19 and 20 are 15, 16 and 17 coded with optimized quantization
#: (:mod:`medvae.residual.coder`, ``optimize``): fewer bits at the same PSNR, no bound but the one measured.
OPTIMIZED_VERSIONS = {version + 3: version for version in LAW_VERSIONS}
_OPTIMIZED_TWIN = {version: optimized for optimized, version in OPTIMIZED_VERSIONS.items()}
#: Versions whose adaptation block names each pass's law.
NAMED_LAW_VERSIONS = (*LAW_VERSIONS, *OPTIMIZED_VERSIONS)
#: Residual strings of an optimized file (rANS stream, escapes, adaptation block, offsets).
OPTIMIZED_STRINGS = 4
ADAPTED_VERSIONS = {**{version + 4: version for version in _UNADAPTED}, **LAW_VERSIONS, **{v: LAW_VERSIONS[t] for v, t in OPTIMIZED_VERSIONS.items()}}
_ADAPTED_TWIN = {version: adapted for adapted, version in LAW_VERSIONS.items()}
#: Residual strings of an adapted file (rANS stream, escapes, adaptation block; formats 8 to 10: two).
ADAPTED_STRINGS = 3
#: Versions under bounded laws (:mod:`medvae.residual.folding`).
BOUNDED_VERSIONS = (BOUNDED_RESIDUAL_VERSION, SERIES_RESIDUAL_VERSION, TWO_PREVIOUS_VERSION, *ADAPTED_VERSIONS)
_RESIDUAL_VERSIONS = (RESIDUAL_VERSION, TIGHTER_PASSES_VERSION, *BOUNDED_VERSIONS)
_TIGHTER_VERSIONS = (TIGHTER_PASSES_VERSION, *BOUNDED_VERSIONS)
#: Largest image side a container may claim (DICOM Rows and Columns are 16-bit).
MAX_SIDE = 65535
#: The format of files from a variable-rate model (format 3 with its quality and achieved PSNR).
VARIABLE_RATE_VERSION = 6
#: Variable-rate files of the release before: the same layout, but a quality between two levels
#: mixed their gains linearly (:mod:`medvae.models.gain`), so decoding mixes them so too.
LINEAR_MIX_VERSION = 5
#: Format 6 with a correction of the reconstruction (:mod:`medvae.correction`) after the exceptions'
#: length and block: what a variable-rate model writes for images of at least
#: :data:`medvae.correction.MIN_PIXELS` pixels.
CORRECTED_VERSION = 11
_VARIABLE_RATE_VERSIONS = (LINEAR_MIX_VERSION, VARIABLE_RATE_VERSION, CORRECTED_VERSION)
#: Formats 21 to 26 are the series formats 9, 10, 16, 17, 19 and 20 whose base latent is coded
#: against the previous slice's (:mod:`medvae.prediction`), the prediction block in the header.
PREDICTED_VERSIONS = dict(zip(range(21, 27), (SERIES_RESIDUAL_VERSION, TWO_PREVIOUS_VERSION, 16, 17, 19, 20)))
_PREDICTED_TWIN = {version: predicted for predicted, version in PREDICTED_VERSIONS.items()}
_PREDICTION_LENGTH = struct.Struct("<H")
#: Formats 27, 28 and 29 are the formats of a slice coded alone, 8, 15 and 18, whose base latent y
#: has a quantization step other than the unit (:func:`medvae.prediction.noise_step`), recorded in
#: the header: a series slice records its step in its prediction block instead.
STEPPED_VERSIONS = dict(zip(range(27, 30), (BOUNDED_RESIDUAL_VERSION, 15, 18)))
_STEPPED_TWIN = {version: stepped for stepped, version in STEPPED_VERSIONS.items()}
_STEP = struct.Struct("<B")
for _derived in (PREDICTED_VERSIONS, STEPPED_VERSIONS):  # a derived format belongs wherever its twin does
    OPTIMIZED_VERSIONS.update({v: OPTIMIZED_VERSIONS[t] for v, t in _derived.items() if t in OPTIMIZED_VERSIONS})
    ADAPTED_VERSIONS.update({v: ADAPTED_VERSIONS[t] for v, t in _derived.items() if t in ADAPTED_VERSIONS})
    NAMED_LAW_VERSIONS = (*NAMED_LAW_VERSIONS, *(v for v, t in _derived.items() if t in NAMED_LAW_VERSIONS))
    BOUNDED_VERSIONS = (*BOUNDED_VERSIONS, *_derived)
    _RESIDUAL_VERSIONS = (*_RESIDUAL_VERSIONS, *_derived)
    _TIGHTER_VERSIONS = (*_TIGHTER_VERSIONS, *_derived)
#: Versions this release reads; 1 decodes through the float path of the release that wrote it.
READABLE_VERSIONS = tuple(range(1, 30))
DTYPE_CODES = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 1, np.dtype(np.int16): 2}
_DTYPES_BY_CODE = {code: dtype for dtype, code in DTYPE_CODES.items()}
_FIXED = struct.Struct("<8sIIiiHH")  # fingerprint, H, W, lo, hi, latent h, latent w
_COUNT = {v: struct.Struct("<B" if v < 3 else "<H") for v in READABLE_VERSIONS}  # strings (formats 1, 2: one byte)
_VARIABLE_RATE = struct.Struct("<HH")  # quality in 1/256, PSNR in 1/100 dB
#: Largest PSNR formats 5, 6 and 11 record (in 1/100 dB); the next value means identical pixels.
_PSNR_LIMIT = 65534
_BOUND = struct.Struct("<H")  # the residual layer's error bound
_TIGHTER = struct.Struct("<B")  # formats 7, 8: passes coded with the bound τ − 1
_RESIDUAL = struct.Struct("<8sH")  # residual model fingerprint, number of residual strings
_CRC = struct.Struct("<I")  # also the pixel CRC of format 2


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the strings and the weights."""

    model: str
    fingerprint: str  # 16 hex digits
    dtype: np.dtype
    shape: tuple[int, int]
    value_range: tuple[int, int]
    latent_shape: tuple[int, int]
    bits_stored: int = 0
    pixels_crc: int | None = None  # CRC-32 of the decoded pixels (format 2; None in format 1)
    exceptions: bytes = b""  # padding mask and extreme pixels (format 2; :mod:`medvae.exceptions`)
    max_error: int | None = None  # residual layer's bound (0 = lossless); None: lossy, no residual layer
    #: Formats 18 to 20: the bound τ of the optimized quantizer (step 2τ + 1); ``max_error`` is then
    #: the largest error of the decoded pixels. None for every other file.
    quantizer_bound: int | None = None
    residual_fingerprint: str = ""  # the residual model's (16 hex digits)
    residual_strings: tuple[bytes, ...] = ()
    tighter_passes: int = 0  # first residual passes coded with bound max_error − 1 (formats 7, 8, 9)
    previous_crc: int | None = None  # formats 9, 10: CRC-32 of the previous slice's pixels, which the residual layer reads
    earlier_crc: int | None = None  # format 10: CRC-32 of the pixels of the slice before the previous one
    quality: float | None = None  # variable-rate models: the quality coded at (a multiple of 1/256)
    psnr: float | None = None  # variable-rate models: the PSNR the encoder measured (inf: identical)
    correction: bytes = b""  # format 11: the correction block (:mod:`medvae.correction`)
    base_prediction: bytes = b""  # formats 21 to 26: the base latent's prediction block (:mod:`medvae.prediction`)
    #: Formats 27 to 29: the quantization step of y, in quarters, of a slice coded alone
    #: (:func:`medvae.prediction.noise_step`); the unit (4) in every other file (a series slice's
    #: step is in its prediction block).
    base_step: int = UNIT_STEP
    version: int = FORMAT_VERSION
    n_bytes: int = 0  # size of the whole container (filled in on reading)
    metadata_bytes: int = 0  # size of the metadata block (filled in on reading)

    @property
    def coding_bound(self) -> int | None:
        """The bound τ the residual layer was coded with (its quantizer's step 2τ + 1): the
        optimized quantizer's, else ``max_error``; None for a lossy file."""
        return self.max_error if self.quantizer_bound is None else self.quantizer_bound


#: Largest inflated zlib block a container may carry (metadata, exceptions): a source header is
#: kilobytes, an Enhanced MR one a few megabytes; more is a zip bomb, refused before it is built.
MAX_INFLATED = 64 * 2**20


def inflate(block: bytes, what: str) -> bytes:
    """zlib-decompress a block of the container, refusing one that inflates past
    :data:`MAX_INFLATED` (without building it) or is truncated. Raises :class:`BitstreamError`."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(block, MAX_INFLATED)
    except zlib.error:
        raise BitstreamError(f"corrupted {what} (not a zlib stream)") from None
    if inflater.unconsumed_tail:
        raise BitstreamError(f"{what} inflates to more than {MAX_INFLATED // 2**20} MiB; refused (a damaged or hostile file)")
    if not inflater.eof:
        raise BitstreamError(f"corrupted {what} (truncated)")
    return raw


def pixels_crc(pixels: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of an image's values as little-endian bytes (the same on every machine); ``crc``
    continues a checksum, so bands of rows taken in order give the whole image's."""
    pixels = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False))
    return zlib.crc32(memoryview(pixels).cast("B"), crc)  # no copy of the image


def pack(header: Header, strings: list[bytes], metadata: bytes = b"") -> bytes:
    """Serialize a header (with its pixel CRC), one byte string per latent group and optional metadata,
    in the current format."""
    if header.pixels_crc is None:
        raise ValueError("a format-3 header needs the CRC of the decoded pixels")
    residual = header.max_error is not None
    variable_rate = header.quality is not None
    if residual and variable_rate:
        raise ValueError("a container holds either a residual layer or a variable-rate quality, not both")
    optimized = header.quantizer_bound is not None
    if header.tighter_passes and not (residual and 1 <= header.tighter_passes <= 3 and header.coding_bound >= 1):
        raise ValueError("tighter_passes (1 to 3) needs a residual layer with max_error >= 1")
    if optimized and not (residual and 1 <= header.quantizer_bound <= 65535 and len(header.residual_strings) == OPTIMIZED_STRINGS):
        raise ValueError(f"an optimized residual layer has a quantizer bound of 1 to 65535 and {OPTIMIZED_STRINGS} strings")
    if header.previous_crc is not None and not residual:
        raise ValueError("only a residual layer reads the previous slice")
    if header.earlier_crc is not None and header.previous_crc is None:
        raise ValueError("a residual layer reads the slice before the previous one only with the previous one")
    if header.correction and not variable_rate:
        raise ValueError("a correction block comes with a variable-rate quality")
    if header.correction and len(header.correction) != correction.BLOCK_BYTES:
        raise ValueError(f"a correction block has {correction.BLOCK_BYTES} bytes")
    series = header.previous_crc is not None
    if header.base_prediction and not (series and 0 < len(header.base_prediction) <= 65535):
        raise ValueError("only a series slice's file (a residual layer given the previous slice) predicts its base, in 1 to 65535 bytes")
    stepped = header.base_step != UNIT_STEP
    if stepped and not (residual and not series and header.base_step in STEPS):
        raise ValueError(f"a base step of {header.base_step}/4 is for a residual layer coded alone, within {STEPS[0]} to {STEPS[-1]} quarters")
    if residual:
        version = TWO_PREVIOUS_VERSION if header.earlier_crc is not None else SERIES_RESIDUAL_VERSION if series else BOUNDED_RESIDUAL_VERSION
        if len(header.residual_strings) == ADAPTED_STRINGS or optimized:
            version = _ADAPTED_TWIN[version]
        if optimized:
            version = _OPTIMIZED_TWIN[version]
        if header.base_prediction:
            version = _PREDICTED_TWIN[version]
        if stepped:
            version = _STEPPED_TWIN[version]
    else:
        version = CORRECTED_VERSION if header.correction else VARIABLE_RATE_VERSION if variable_rate else FORMAT_VERSION
    if len(strings) > 65535 or len(header.residual_strings) > 65535:
        raise ValueError("a container holds at most 65535 strings per layer")
    name = header.model.encode("ascii")
    if not 0 < len(name) < 256:
        raise ValueError(f"model name {header.model!r} must be 1..255 ASCII characters")
    parts = [
        MAGIC,
        bytes([version, DTYPE_CODES[np.dtype(header.dtype)], header.bits_stored, len(name)]),
        name,
        _FIXED.pack(
            bytes.fromhex(header.fingerprint),
            *header.shape,
            *header.value_range,
            *header.latent_shape,
        ),
        _COUNT[version].pack(len(strings)),
        _CRC.pack(header.pixels_crc),
    ]
    if variable_rate:
        psnr = _PSNR_LIMIT + 1 if header.psnr is None or header.psnr == float("inf") else min(_PSNR_LIMIT, max(0, round(header.psnr * 100)))
        parts.append(_VARIABLE_RATE.pack(round(header.quality * 256), psnr))
    for s in strings:
        parts += [struct.pack("<I", len(s)), s]
    parts += [struct.pack("<I", len(header.exceptions)), bytes(header.exceptions), bytes(header.correction)]
    if residual:
        parts += [_BOUND.pack(header.max_error), _TIGHTER.pack(header.tighter_passes)]
        if optimized:
            parts.append(_BOUND.pack(header.quantizer_bound))
        if stepped:
            parts.append(_STEP.pack(header.base_step))
        if series:
            parts.append(_CRC.pack(header.previous_crc))
        if header.earlier_crc is not None:
            parts.append(_CRC.pack(header.earlier_crc))
        if header.base_prediction:
            parts += [_PREDICTION_LENGTH.pack(len(header.base_prediction)), bytes(header.base_prediction)]
        parts.append(_RESIDUAL.pack(bytes.fromhex(header.residual_fingerprint), len(header.residual_strings)))
        for s in header.residual_strings:
            parts += [struct.pack("<I", len(s)), s]
    parts += [struct.pack("<I", len(metadata)), bytes(metadata)]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


class _Reader:
    """Cursor over the container bytes that reports truncation clearly."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamError(
                f"truncated bitstream: {what} needs bytes {self.pos}..{self.pos + n}, "
                f"only {len(self.data)} present"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def unpack(data: bytes) -> tuple[Header, list[bytes], bytes]:
    """Parse and verify a container: (header, strings, metadata). Raises :class:`BitstreamError`."""
    data = bytes(data)
    r = _Reader(data)
    if r.take(4, "magic number") != MAGIC:
        raise BitstreamError("not a MedVAE bitstream (bad magic number)")
    version, dtype_code, bits_stored, name_len = r.take(4, "header")
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"bitstream format version {version} is not supported (this MedVAE reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    try:
        name = r.take(name_len, "model name").decode("ascii")
        dtype = _DTYPES_BY_CODE[dtype_code]
    except (UnicodeDecodeError, KeyError):
        raise BitstreamError("corrupted bitstream header") from None
    fp, h, w, lo, hi, lh, lw = _FIXED.unpack(r.take(_FIXED.size, "header"))
    count = _COUNT[version]
    (n_groups,) = count.unpack(r.take(count.size, "number of strings"))
    crc_of_pixels = _CRC.unpack(r.take(4, "pixel checksum"))[0] if version >= 2 else None
    quality = psnr = None
    if version in _VARIABLE_RATE_VERSIONS:
        units, centi_db = _VARIABLE_RATE.unpack(r.take(_VARIABLE_RATE.size, "quality and PSNR"))
        quality, psnr = units / 256, float("inf") if centi_db > _PSNR_LIMIT else centi_db / 100
    strings = []
    for i in range(n_groups):
        (length,) = struct.unpack("<I", r.take(4, f"length of string {i}"))
        strings.append(r.take(length, f"string {i}"))
    exceptions = b""
    if version >= 2:
        (exc_len,) = struct.unpack("<I", r.take(4, "exception block length"))
        exceptions = r.take(exc_len, "exception block")
    block = r.take(correction.BLOCK_BYTES, "correction block") if version == CORRECTED_VERSION else b""
    max_error, residual_fp, residual_strings, tighter_passes, previous_crc, earlier_crc = None, "", [], 0, None, None
    quantizer_bound, base_prediction, base_step = None, b"", UNIT_STEP
    twin = layout(version)  # an adapted format lays out its header as its twin
    if twin in _RESIDUAL_VERSIONS:
        (max_error,) = _BOUND.unpack(r.take(_BOUND.size, "residual layer header"))
        if twin in _TIGHTER_VERSIONS:
            (tighter_passes,) = _TIGHTER.unpack(r.take(_TIGHTER.size, "residual layer header"))
        if version in OPTIMIZED_VERSIONS:
            (quantizer_bound,) = _BOUND.unpack(r.take(_BOUND.size, "residual layer header"))
        if version in STEPPED_VERSIONS:
            (base_step,) = _STEP.unpack(r.take(_STEP.size, "base step"))
            if base_step not in STEPS or base_step == UNIT_STEP:
                raise BitstreamError(f"corrupted bitstream: a format-{version} file with a base step of {base_step}/4")
        if twin in (SERIES_RESIDUAL_VERSION, TWO_PREVIOUS_VERSION):
            (previous_crc,) = _CRC.unpack(r.take(_CRC.size, "previous slice's checksum"))
        if twin == TWO_PREVIOUS_VERSION:
            (earlier_crc,) = _CRC.unpack(r.take(_CRC.size, "checksum of the slice before the previous one"))
        if version in PREDICTED_VERSIONS:
            (length,) = _PREDICTION_LENGTH.unpack(r.take(_PREDICTION_LENGTH.size, "base prediction length"))
            base_prediction = r.take(length, "base prediction block")
            if not base_prediction:
                raise BitstreamError(f"corrupted bitstream: a format-{version} file with an empty base prediction block")
        fp_bytes, n_residual = _RESIDUAL.unpack(r.take(_RESIDUAL.size, "residual layer header"))
        expected = OPTIMIZED_STRINGS if version in OPTIMIZED_VERSIONS else ADAPTED_STRINGS
        if (version in ADAPTED_VERSIONS) != (n_residual == expected) and twin in BOUNDED_VERSIONS:
            raise BitstreamError(f"corrupted bitstream: a format-{version} file with {n_residual} residual strings")
        if quantizer_bound == 0:
            raise BitstreamError("corrupted bitstream: an optimized residual layer with a quantizer bound of 0")
        least = 1 if version == TIGHTER_PASSES_VERSION else 0
        if not (least <= tighter_passes <= 3) or (tighter_passes and (quantizer_bound or max_error) < 1):
            raise BitstreamError(f"corrupted bitstream: {tighter_passes} passes tighter than max error {max_error}")
        residual_fp = fp_bytes.hex()
        for i in range(n_residual):
            (length,) = struct.unpack("<I", r.take(4, f"length of residual string {i}"))
            residual_strings.append(r.take(length, f"residual string {i}"))
    (meta_len,) = struct.unpack("<I", r.take(4, "metadata length"))
    metadata = r.take(meta_len, "metadata")
    (crc,) = _CRC.unpack(r.take(4, "checksum"))
    if r.pos != len(data):
        raise BitstreamError(f"{len(data) - r.pos} unexpected bytes after the end of the bitstream")
    if zlib.crc32(data[: r.pos - 4]) != crc:
        raise BitstreamError("bitstream checksum mismatch: the data is corrupted")
    if h == 0 or w == 0 or hi <= lo:
        raise BitstreamError("corrupted bitstream header (empty shape or value range)")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise BitstreamError(f"corrupted bitstream header: {h} x {w} pixels exceeds {MAX_SIDE} a side")
    header = Header(
        model=name,
        fingerprint=fp.hex(),
        dtype=dtype,
        shape=(h, w),
        value_range=(lo, hi),
        latent_shape=(lh, lw),
        bits_stored=bits_stored,
        pixels_crc=crc_of_pixels,
        exceptions=exceptions,
        max_error=max_error,
        quantizer_bound=quantizer_bound,
        residual_fingerprint=residual_fp,
        residual_strings=tuple(residual_strings),
        tighter_passes=tighter_passes,
        previous_crc=previous_crc,
        earlier_crc=earlier_crc,
        quality=quality,
        psnr=psnr,
        correction=block,
        base_prediction=base_prediction,
        base_step=base_step,
        version=version,
        n_bytes=len(data),
        metadata_bytes=len(metadata),
    )
    return header, strings, metadata


def layout(version: int) -> int:
    """The format whose layout a file of ``version`` follows: an adapted residual format's twin
    (12, 13, 14, 15, 16, 17 and 18, 19, 20: 8, 9, 10; :data:`ADAPTED_VERSIONS`), a predicted one's
    (21 to 26: 9 and 10, :data:`PREDICTED_VERSIONS`; 27 to 29: 8, :data:`STEPPED_VERSIONS`), else the version itself."""
    version = PREDICTED_VERSIONS.get(version, STEPPED_VERSIONS.get(version, version))
    return ADAPTED_VERSIONS.get(version, version)


def read_header(data: bytes) -> Header:
    """The verified header of a container, without decoding the image."""
    return unpack(data)[0]


def read_metadata(data: bytes) -> bytes:
    """The verified metadata block of a container (``b""`` when none was attached)."""
    return unpack(data)[2]
