"""Exception types shared by the whole library.

Everything MedVAE raises on purpose derives from :class:`MedVAEError`, so the
command line can print one clean line per failure instead of a traceback.
"""


class MedVAEError(Exception):
    """Base class of every error MedVAE raises deliberately."""


class BitstreamError(MedVAEError):
    """A ``.mvae`` bitstream is truncated, corrupted, or needs other weights."""


class InputError(MedVAEError):
    """An input image or file cannot be handled (wrong type, colour, no pixels...)."""
