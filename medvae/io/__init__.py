"""Medical image input and output at native bit depth.

``read(path)`` reads a DICOM file, series folder or multi-frame object, a
NIfTI, NRRD, PNG, TIFF or ``.npy`` file into an :class:`ImageStack` of stored
integers plus what the codec and the metrics need. ``write_decoded_dicom``
writes a decoded image back as DICOM that declares its lossy compression, and
the ``write_*`` helpers write decoded slices in the other formats.
"""

from medvae.io.dicom_writer import write_decoded_dicom
from medvae.io.reader import detect_format, read
from medvae.io.series import SeriesInfo, find_series
from medvae.io.stack import ImageStack
from medvae.io.writers import write_like, write_nifti, write_npy, write_nrrd, write_png16, write_tiff

__all__ = [
    "ImageStack",
    "SeriesInfo",
    "detect_format",
    "find_series",
    "read",
    "write_decoded_dicom",
    "write_like",
    "write_nifti",
    "write_npy",
    "write_nrrd",
    "write_png16",
    "write_tiff",
]
