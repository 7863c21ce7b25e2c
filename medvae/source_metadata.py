"""What a ``.mvae`` file remembers about its source, so decoding can write the source's format back.

The command line stores one :class:`SourceInfo` in the container's metadata block
(:func:`medvae.bitstream.pack`), one per coded slice. The block is::

    b"MVS" | version (1 byte) | zlib( u32 length of JSON | JSON descriptor | blob )

The JSON descriptor names the source format, file name, slice index, bit depth,
rescale and display windows. The blob depends on the format:

* ``dicom``: the source dataset without its pixel data, as DICOM Part-10 bytes.
  For a multi-frame file it describes just this frame (``NumberOfFrames`` 1, this
  frame's per-frame functional group), so every decoded frame is a valid instance.
* ``nifti``: the NIfTI header (348 or 540 bytes) with its sform/qform moved to
  this slice, so a decoded slice sits where it sat in the volume.
* nothing for NRRD (its few spatial fields are in the JSON, origin moved to the
  slice), PNG, TIFF and ``.npy``.

Everything is zlib-compressed; a typical CT header costs 0.6 to 2.5 kB.
"""

from __future__ import annotations

import copy
import io
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medvae.bitstream import inflate
from medvae.errors import BitstreamError

MAGIC = b"MVS"
VERSION = 1
FORMATS = ("dicom", "nifti", "nrrd", "png", "tiff", "npy")

#: NRRD header fields that locate a slice in space (kept; the rest is re-derived on writing).
NRRD_FIELDS = ("space", "space directions", "space origin", "kinds", "space units")

#: Multi-frame attributes holding one value per frame (reduced to this frame's value).
PER_FRAME_VECTORS = (
    "FrameTimeVector", "SliceVector", "EnergyWindowVector", "DetectorVector", "PhaseVector",
    "RotationVector", "RRIntervalVector", "TimeSlotVector", "AngularViewVector", "TimeSliceVector",
)


@dataclass
class SourceInfo:
    """The source of one coded slice.

    Attributes:
        format: ``dicom``, ``nifti``, ``nrrd``, ``png``, ``tiff`` or ``npy``.
        name: the source file's name (no folders).
        slice: index of this slice in the source file (frame, volume slice or page).
        slices: number of slices in the source file.
        bits_stored, signed, modality, photometric, slope, intercept, windows:
            as in :class:`medvae.io.ImageStack`.
        dataset: DICOM only: the source dataset (no pixel data) describing this slice.
        nifti_header: NIfTI only: the source header, placed at this slice.
        nrrd_header: NRRD only: :data:`NRRD_FIELDS` of the source, origin at this slice.
    """

    format: str
    name: str
    slice: int = 0
    slices: int = 1
    bits_stored: int = 0
    signed: bool = False
    modality: str = "OT"
    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)
    dataset: Any = None
    nifti_header: Any = None
    nrrd_header: dict | None = None


# ----------------------------------------------------------------- from a stack


def from_stack(stack: Any, index: int) -> SourceInfo:
    """Describe slice ``index`` of a :class:`medvae.io.ImageStack` read from one file."""
    path = stack.paths[index] if stack.paths else None
    slices = sum(1 for p in stack.paths if p == path) if stack.paths else len(stack)
    frame = stack.frames[index] if stack.frames else index
    slope, intercept = stack.rescale_of(index)
    info = SourceInfo(
        format=stack.source_format,
        name=path.name if path is not None else "",
        slice=int(frame),
        slices=int(slices),
        bits_stored=int(stack.bits_stored),
        signed=bool(stack.signed),
        modality=str(stack.modality or "OT"),
        photometric=str(stack.photometric),
        slope=float(slope),
        intercept=float(intercept),
        windows=[(float(c), float(w)) for c, w in stack.windows],
    )
    if stack.source_format == "dicom":
        info.dataset = frame_dataset(stack.datasets[index], int(frame))
    elif stack.source_format == "nifti" and stack.header is not None:
        info.nifti_header = nifti_slice_header(stack.header, int(frame))
    elif stack.source_format == "nrrd" and stack.header is not None:
        info.nrrd_header = nrrd_slice_header(stack.header, int(frame))
    return info


def frame_dataset(ds: Any, frame: int) -> Any:
    """A copy of ``ds`` that describes only ``frame``, without command or group-length elements.

    A single-frame dataset is copied as is. For a multi-frame one, ``NumberOfFrames``
    becomes 1 and per-frame sequences and vectors keep only this frame's entry.
    """
    ds = copy.deepcopy(ds)
    for elem in list(ds):
        if elem.tag.group == 0x0000 or elem.tag.element == 0x0000:
            del ds[elem.tag]  # command set and group lengths: not part of a stored instance
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        ds.NumberOfFrames = 1
        groups = ds.get("PerFrameFunctionalGroupsSequence")
        if groups is not None and len(groups) == n_frames:
            ds.PerFrameFunctionalGroupsSequence = [groups[frame]]
        for keyword in PER_FRAME_VECTORS:
            values = ds.get(keyword)
            if values is not None and not isinstance(values, (str, bytes)) and len(values) == n_frames:
                setattr(ds, keyword, [values[frame]])
    return ds


def nifti_slice_header(header: Any, k: int) -> Any:
    """A copy of a nibabel NIfTI header whose sform/qform put voxel (i, j, 0) where (i, j, k) was."""
    header = header.copy()
    shift = np.eye(4)
    shift[2, 3] = k
    for kind in ("sform", "qform"):
        affine, code = getattr(header, f"get_{kind}")(coded=True)
        if code and affine is not None:
            getattr(header, f"set_{kind}")(affine @ shift, code=int(code))
    return header


def nrrd_slice_header(header: dict, k: int) -> dict:
    """The spatial fields of a pynrrd header, origin moved to slice ``k`` (third axis)."""
    out = {key: header[key] for key in NRRD_FIELDS if key in header}
    directions = out.get("space directions")
    origin = out.get("space origin")
    if directions is not None and origin is not None:
        step = np.asarray(directions, dtype=float)[2]
        if np.all(np.isfinite(step)):
            out["space origin"] = np.asarray(origin, dtype=float) + k * step
    return out


# ------------------------------------------------------------------ to bytes


def pack(info: SourceInfo) -> bytes:
    """Serialize ``info`` for the container's metadata block."""
    if info.format not in FORMATS:
        raise ValueError(f"unknown source format {info.format!r}")
    blob, blob_kind = b"", ""
    if info.dataset is not None:
        blob, blob_kind = dataset_bytes(info.dataset), "dicom"
    elif info.nifti_header is not None:
        blob = info.nifti_header.binaryblock
        blob_kind = "nifti2" if len(blob) == 540 else "nifti1"
    descriptor = {
        "format": info.format,
        "name": info.name,
        "slice": info.slice,
        "slices": info.slices,
        "bits_stored": info.bits_stored,
        "signed": info.signed,
        "modality": info.modality,
        "photometric": info.photometric,
        "slope": info.slope,
        "intercept": info.intercept,
        "windows": [list(w) for w in info.windows],
        "blob": blob_kind,
    }
    if info.nrrd_header is not None:
        descriptor["nrrd"] = {k: _jsonable(v) for k, v in info.nrrd_header.items()}
    text = json.dumps(descriptor, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return MAGIC + bytes([VERSION]) + zlib.compress(struct.pack("<I", len(text)) + text + blob, 9)


def is_source_metadata(data: bytes) -> bool:
    """True if a metadata block was written by :func:`pack` (any version)."""
    return bytes(data[:3]) == MAGIC


def unpack(data: bytes) -> SourceInfo:
    """Parse a metadata block written by :func:`pack`. Raises :class:`BitstreamError`."""
    data = bytes(data)
    if not is_source_metadata(data) or len(data) < 4:
        raise BitstreamError("metadata block is not MedVAE source metadata")
    if data[3] != VERSION:
        raise BitstreamError(f"source metadata version {data[3]} is not supported (this MedVAE reads {VERSION})")
    try:
        raw = inflate(data[4:], "source metadata")
        (n,) = struct.unpack_from("<I", raw)
        descriptor = json.loads(raw[4 : 4 + n].decode("utf-8"))
        blob = raw[4 + n :]
        info = SourceInfo(
            format=str(descriptor["format"]),
            name=str(descriptor["name"]),
            slice=int(descriptor["slice"]),
            slices=int(descriptor["slices"]),
            bits_stored=int(descriptor["bits_stored"]),
            signed=bool(descriptor["signed"]),
            modality=str(descriptor["modality"]),
            photometric=str(descriptor["photometric"]),
            slope=float(descriptor["slope"]),
            intercept=float(descriptor["intercept"]),
            windows=[(float(c), float(w)) for c, w in descriptor["windows"]],
        )
        kind = descriptor.get("blob", "")
    except (zlib.error, struct.error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise BitstreamError(f"corrupted source metadata ({type(exc).__name__})") from None
    if info.format not in FORMATS:
        raise BitstreamError(f"source metadata names an unknown format {info.format!r}")
    if kind == "dicom":
        info.dataset = dataset_from_bytes(blob)
    elif kind in ("nifti1", "nifti2"):
        info.nifti_header = _nifti_header(blob, kind)
    if "nrrd" in descriptor:
        info.nrrd_header = {k: _from_jsonable(k, v) for k, v in descriptor["nrrd"].items()}
    return info


def dataset_bytes(ds: Any) -> bytes:
    """A pixel-less DICOM dataset as Part-10 bytes (its own transfer syntax, file meta kept)."""
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def dataset_from_bytes(data: bytes) -> Any:
    """Inverse of :func:`dataset_bytes`."""
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for damaged data
        raise BitstreamError(f"corrupted DICOM header in source metadata ({type(exc).__name__})") from None


def _nifti_header(blob: bytes, kind: str) -> Any:
    import nibabel as nib

    cls = nib.Nifti2Header if kind == "nifti2" else nib.Nifti1Header
    try:
        return cls.from_fileobj(io.BytesIO(blob), check=False)
    except Exception as exc:  # nibabel raises several types for bad headers
        raise BitstreamError(f"corrupted NIfTI header in source metadata ({type(exc).__name__})") from None


def _jsonable(value: Any) -> Any:
    """NRRD header values as JSON: arrays to nested lists, NaN (a 'none' direction) to null."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_jsonable(key: str, value: Any) -> Any:
    if key in ("space directions", "space origin") and value is not None:
        return np.array(
            [[np.nan if x is None else x for x in row] if isinstance(row, list) else (np.nan if row is None else row)
             for row in value],
            dtype=float,
        )
    return value
