"""Turn a decoded slice back into a file in its source's format (the bytes, not yet on disk).

The bytes come from :func:`medvae.io.writers.source_bytes`, the encoder behind the
library's writers too; the command line publishes them atomically
(:func:`medvae.io.files.publish`), so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import numpy as np

from medvae.io.writers import npy_bytes, source_bytes
from medvae.source_metadata import SourceInfo

#: Output suffix per source format; ``.npy`` when the source is unknown.
SUFFIXES = {"dicom": ".dcm", "nifti": ".nii.gz", "nrrd": ".nrrd", "png": ".png", "tiff": ".tif", "npy": ".npy"}


def suffix_for(info: SourceInfo | None) -> str:
    """File suffix a slice with this source description is restored to."""
    return SUFFIXES[info.format] if info is not None else ".npy"


def render(
    image: np.ndarray, info: SourceInfo | None, *, compression_ratio: float, name: str = "restored",
    max_error: int | None = None,
) -> bytes:
    """The file a decoded 2-D ``image`` is restored to, as bytes.

    DICOM keeps the source's attributes and declares the lossy compression, or, for a
    near-lossless file, its ``max_error`` (a lossless one, ``max_error`` 0, is the source
    instance again; :func:`medvae.io.write_decoded_dicom`); NIfTI and NRRD slices keep their
    position in space; PNG, TIFF and ``.npy`` keep the dtype. Without ``info``
    (a bitstream written through the Python API) the result is ``.npy``.
    ``name`` only appears in error messages.
    """
    if info is None:
        return npy_bytes(image)
    dicom = {"max_error": max_error, "whole_instance": info.slices == 1} if info.format == "dicom" else {}
    return source_bytes(image, info.format, dataset=info.dataset, compression_ratio=compression_ratio, name=name,
                        header=info.nifti_header if info.format == "nifti" else info.nrrd_header, **dicom)
