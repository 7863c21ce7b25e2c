"""Write a decoded image as DICOM that declares its lossy compression (or, decoded losslessly, the source instance again).

The output keeps every attribute of the source that stays true, and changes
only what decoding changed:

* a new *SOP Instance UID* (and *Media Storage SOP Instance UID*);
* *Image Type* value 1 ``DERIVED``, without the attributes an Enhanced MR image may
  carry only while it is ``ORIGINAL`` (:data:`ORIGINAL_ONLY`);
* *Lossy Image Compression* ``01``, with *Lossy Image Compression Ratio* and
  *Method* appended to any earlier lossy steps of the source (PS3.3 C.7.6.1.1.5);
* *Derivation Description*, a *Derivation Code Sequence* item (DCM 113040
  "Lossy Compression") and a *Source Image Sequence* item pointing at the source;
* *Instance Creation Date/Time*;
* near-lossless files (``max_error`` τ ≥ 1) say so and give the bound in *Derivation
  Description* ("near-lossless, max error τ"); lossless ones (τ = 0) decode to the source's
  pixel data exactly, so their output is the source instance itself, re-encoded natively:
  same SOP Instance UID, no lossy declaration (the source's *Lossy Image Compression*, if
  any, kept as it was), no derivation;
* the pixel data, native (uncompressed) in the source's *Bits Allocated*,
  *Bits Stored*, *High Bit* and *Pixel Representation*; the transfer syntax is
  the source's when it was native little endian, else Explicit VR Little Endian;
* *Smallest/Largest Image Pixel Value* recomputed; attributes that no longer
  hold (pixel range in series, digital signatures) removed.
"""

from __future__ import annotations

import copy
import datetime as _dt
import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medvae.errors import InputError
from medvae.io.dicom import as_values, strip_pixel_data
from medvae.io.files import atomic_path

#: Elements removed from the output because decoding makes them untrue.
UNTRUE_AFTER_DECODING = (
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "DigitalSignaturesSequence",
    "MACParametersSequence",
    "DataSetTrailingPadding",
)

#: DICOM code for the derivation (CID 7203 "Image Derivation").
LOSSY_COMPRESSION_CODE = ("113040", "DCM", "Lossy Compression")


def write_decoded_dicom(
    image: np.ndarray,
    source_dataset: Dataset,
    path: str | Path,
    *,
    compression_ratio: float,
    method: str = "MEDVAE",
    description: str | None = None,
    series_instance_uid: str | None = None,
    max_error: int | None = None,
    whole_instance: bool = True,
) -> Path:
    """Write ``image``, decoded from a lossy bitstream, as a DICOM file.

    Args:
        image (numpy.ndarray): Decoded stored integers, ``(rows, columns)``; or ``(frames, rows,
            columns)`` when the source is multi-frame. Rows and columns must match the source
            and every value must fit its *Bits Stored*.
        source_dataset (pydicom.Dataset): The dataset the image was read from (pixel data may be
            absent).
        path (str or Path): Output file; written atomically (temporary file, then rename). It
            may not be the file ``source_dataset`` was read from.
        compression_ratio (float): Uncompressed size over compressed size, as in *Lossy Image
            Compression Ratio*.
        method (str): *Lossy Image Compression Method* value (a short code string).
        description (str, optional): *Derivation Description*; a sentence naming the method and
            ratio by default.
        series_instance_uid (str, optional): New *Series Instance UID*; the source's is kept
            when None.
        max_error (int, optional): The bound the bitstream kept on every pixel: 0 for a lossless
            file (nothing is declared, the instance is the source's), τ ≥ 1 for near-lossless
            (declared as lossy, with the bound); None for the lossy codec.
        whole_instance (bool): ``image`` is all of the source instance (False for one frame of a
            multi-frame source: a lossless frame is then a new, derived instance, not the source's).

    Returns:
        Path: ``path``.

    Raises:
        medvae.errors.InputError: Shape or values that do not fit the source's geometry and
            pixel format, or ``path`` is the source file.
    """
    path = Path(path)
    source_file = getattr(source_dataset, "filename", None)
    if isinstance(source_file, (str, Path)) and path.exists() and Path(source_file).exists() \
            and path.samefile(source_file):
        raise InputError(f"{path}: refusing to overwrite the source DICOM file")
    data = decoded_dicom_bytes(image, source_dataset, compression_ratio=compression_ratio, method=method,
                               description=description, series_instance_uid=series_instance_uid, name=str(path),
                               max_error=max_error, whole_instance=whole_instance)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def decoded_dicom_bytes(
    image: np.ndarray,
    source_dataset: Dataset,
    *,
    compression_ratio: float,
    method: str = "MEDVAE",
    description: str | None = None,
    series_instance_uid: str | None = None,
    name: str = "decoded DICOM",
    max_error: int | None = None,
    whole_instance: bool = True,
) -> bytes:
    """The DICOM file :func:`write_decoded_dicom` writes, as bytes (``name``: for error messages)."""
    if not compression_ratio > 0:
        raise ValueError(f"compression_ratio must be positive, got {compression_ratio}")

    ds = copy.deepcopy(source_dataset)
    strip_pixel_data(ds)
    frames = _pixels_like_source(np.asarray(image), ds, name)

    _prepare_file_meta(ds)
    ds.set_pixel_data(
        frames if "NumberOfFrames" in ds else frames[0],
        str(ds.PhotometricInterpretation).strip(),
        int(ds.BitsStored),
        generate_instance_uid=max_error != 0 or not whole_instance,
    )
    if max_error == 0 and not whole_instance:  # one frame of a multi-frame source, unchanged: derived, not lossy
        _declare_derived(ds, source_dataset, f"Frame extracted by MedVAE lossless coding ({method})", None)
    elif max_error != 0:
        if max_error and description is None:
            description = (
                f"Near-lossless compression by MedVAE learned codec ({method}), near-lossless, max error "
                f"{max_error}, compression ratio {float(compression_ratio):.4g}:1"
            )
        _declare_lossy(ds, source_dataset, compression_ratio, method, description)
    if "SmallestImagePixelValue" in ds:
        ds.SmallestImagePixelValue = int(frames.min())
    if "LargestImagePixelValue" in ds:
        ds.LargestImagePixelValue = int(frames.max())
    for keyword in UNTRUE_AFTER_DECODING:
        if keyword in ds:
            delattr(ds, keyword)
    if series_instance_uid is not None:
        ds.SeriesInstanceUID = series_instance_uid

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _pixels_like_source(image: np.ndarray, ds: Dataset, path: str) -> np.ndarray:
    """``image`` as ``(frames, rows, columns)`` in the source's stored integer type."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = image[np.newaxis] if image.ndim == 2 else image
    if frames.ndim != 3 or frames.shape != (n_frames, int(ds.Rows), int(ds.Columns)):
        raise InputError(
            f"{path}: decoded image shape {image.shape} does not match the source "
            f"({n_frames} frame(s) of {ds.Rows}x{ds.Columns})"
        )
    if frames.dtype.kind not in "iu":
        raise InputError(f"{path}: decoded image must hold integers, got {frames.dtype}")
    signed = int(ds.PixelRepresentation) == 1
    bits_stored = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    vmin, vmax = int(frames.min()), int(frames.max())
    if vmin < lo or vmax > hi:
        raise InputError(
            f"{path}: decoded values {vmin}..{vmax} do not fit the source's BitsStored "
            f"{bits_stored} ({'signed' if signed else 'unsigned'}, {lo}..{hi})"
        )
    dtype = np.dtype(f"{'i' if signed else 'u'}{int(ds.BitsAllocated) // 8}")
    return frames.astype(dtype)


def _prepare_file_meta(ds: Dataset) -> None:
    """File meta for a native little-endian file written by pydicom."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    tsyntax = meta.get("TransferSyntaxUID")
    if tsyntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if ds.get("SOPClassUID"):
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                    "PrivateInformation"):
        if keyword in meta:
            delattr(meta, keyword)
    ds.file_meta = meta  # pydicom encodes the dataset as this transfer syntax says
    for elem in list(ds):  # command (0000) or file meta (0002) elements have no place in a dataset
        if elem.tag.group in (0x0000, 0x0002):
            del ds[elem.tag]


#: Attributes an Enhanced MR image (:data:`ENHANCED_MR`) may carry only while Image Type value 1
#: is ORIGINAL or MIXED (PS3.3 C.8.13.4 MR Pulse Sequence and the Bulk Motion Synchronization
#: module, as dciodvfy checks them): a DERIVED one drops them. The classic MR Image IOD keeps
#: them (there MR Acquisition Type is Type 2).
ENHANCED_MR = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3")  # Enhanced MR, Enhanced MR Color
ORIGINAL_ONLY = (
    "PulseSequenceName", "MRAcquisitionType", "EchoPulseSequence", "MultipleSpinEcho", "MultiPlanarExcitation",
    "PhaseContrast", "VelocityEncodingAcquisitionSequence", "TimeOfFlightContrast", "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence", "EchoPlanarPulseSequence", "SaturationRecovery", "SpectrallySelectedSuppression",
    "OversamplingPhase", "GeometryOfKSpaceTraversal", "RectilinearPhaseEncodeReordering", "SegmentedKSpaceTraversal",
    "CoverageOfKSpace", "NumberOfKSpaceTrajectories", "BulkMotionCompensationTechnique", "BulkMotionSignalSource",
)


def _declare_lossy(
    ds: Dataset, source: Dataset, ratio: float, method: str, description: str | None
) -> None:
    """Set the lossy-compression and derivation attributes on ``ds``."""
    ratios, methods = [], []
    if str(source.get("LossyImageCompression", "")).strip() == "01":
        ratios = [_ds_str(v) for v in as_values(source.get("LossyImageCompressionRatio"))]
        methods = [str(v) for v in as_values(source.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = ratios + [_ds_str(ratio)]
    if len(methods) == len(ratios):
        ds.LossyImageCompressionMethod = methods + [method]
    else:  # the source's methods do not pair with its ratios: state ours alone
        ds.LossyImageCompressionMethod = [method]
    text = description or (
        f"Lossy compression by MedVAE learned codec ({method}), "
        f"compression ratio {float(ratio):.4g}:1"
    )
    _declare_derived(ds, source, text, LOSSY_COMPRESSION_CODE)


def _declare_derived(ds: Dataset, source: Dataset, text: str, code: tuple[str, str, str] | None) -> None:
    """Image Type DERIVED (without what only ORIGINAL Enhanced MR may carry), the derivation
    description and code, a Source Image Sequence item and the creation date and time."""
    image_type = [str(v) for v in as_values(source.get("ImageType"))] or ["DERIVED", "SECONDARY"]
    image_type[0] = "DERIVED"
    if len(image_type) == 1:
        image_type.append("SECONDARY")
    ds.ImageType = image_type
    if str(source.get("SOPClassUID", "")) in ENHANCED_MR:
        for keyword in ORIGINAL_ONLY:
            if keyword in ds:
                delattr(ds, keyword)

    previous = str(source.get("DerivationDescription", "") or "").strip()
    ds.DerivationDescription = (f"{previous}; {text}" if previous else text)[:1024]

    if code is not None:
        codes = Sequence(list(copy.deepcopy(source.get("DerivationCodeSequence", []) or [])))
        codes.append(_code(*code))
        ds.DerivationCodeSequence = codes

    if _valid_uid(source.get("SOPInstanceUID")) and _valid_uid(source.get("SOPClassUID")):
        # Only a well-formed reference: copying a malformed UID would add a validation error.
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.SOPClassUID
        ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        was_lossy = str(source.get("LossyImageCompression", "")).strip() == "01"
        purpose = ("121322", "DCM", "Source image for image processing operation") if was_lossy else (
            "121320", "DCM", "Uncompressed predecessor")
        ref.PurposeOfReferenceCodeSequence = Sequence([_code(*purpose)])
        refs = Sequence(list(copy.deepcopy(source.get("SourceImageSequence", []) or [])))
        refs.append(ref)
        ds.SourceImageSequence = refs

    now = _dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")


def _valid_uid(value: object) -> bool:
    """A UID that validators accept as a reference: well formed, under an ISO (1) or
    joint ISO/ITU-T (2) root; placeholder roots like ``0.0.0.0`` are left out."""
    text = str(value or "")
    return UID(text).is_valid and text[:2] in ("1.", "2.")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds_str(value: object) -> str:
    """A Decimal String for a ratio (6 significant digits: at most 12 characters)."""
    return f"{float(value):.6g}"  # type: ignore[arg-type]
