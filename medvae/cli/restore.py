"""Turn a decoded slice back into a file in its source's format (the bytes, not yet on disk).

The writers of :mod:`medvae.io` write to a path; here they write into a private
scratch folder outside the output tree and we return the bytes, so the command
line can publish them atomically (:func:`medvae.cli.files.publish`) and an
interrupted run never leaves a temporary file among the outputs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from medvae.errors import InputError, MedVAEError
from medvae.source_metadata import SourceInfo

#: Output suffix per source format; ``.npy`` when the source is unknown.
SUFFIXES = {"dicom": ".dcm", "nifti": ".nii.gz", "nrrd": ".nrrd", "png": ".png", "tiff": ".tif", "npy": ".npy"}


def suffix_for(info: SourceInfo | None) -> str:
    """File suffix a slice with this source description is restored to."""
    return SUFFIXES[info.format] if info is not None else ".npy"


def render(image: np.ndarray, info: SourceInfo | None, *, compression_ratio: float, name: str = "restored") -> bytes:
    """The file a decoded 2-D ``image`` is restored to, as bytes.

    DICOM keeps the source's attributes and declares the lossy compression
    (:func:`medvae.io.write_decoded_dicom`); NIfTI and NRRD slices keep their
    position in space; PNG, TIFF and ``.npy`` keep the dtype. Without ``info``
    (a bitstream written through the Python API) the result is ``.npy``.
    ``name`` only appears in error messages.
    """
    from medvae import io as mio

    suffix = suffix_for(info)
    with tempfile.TemporaryDirectory(prefix="medvae-") as scratch:
        path = Path(scratch) / f"slice{suffix}"
        try:
            if info is None or info.format == "npy":
                mio.write_npy(image, path)
            elif info.format == "dicom":
                if info.dataset is None:
                    raise InputError("source metadata has no DICOM header")
                mio.write_decoded_dicom(image, info.dataset, path, compression_ratio=compression_ratio)
            elif info.format == "png":
                mio.write_png16(image, path)
            elif info.format == "tiff":
                mio.write_tiff(image, path)
            elif info.format == "nifti":
                mio.write_nifti(image, path, info.nifti_header)
            elif info.format == "nrrd":
                mio.write_nrrd(image, path, info.nrrd_header)
        except MedVAEError as exc:
            # Name the output, not the scratch file, in the message.
            raise type(exc)(str(exc).replace(str(path), name)) from None
        return path.read_bytes()
