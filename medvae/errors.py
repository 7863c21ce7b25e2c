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


class KeptFileError(InputError):
    """A file :meth:`medvae.Codec.compress_series` was asked to keep (``kept``, an interrupted
    run's) does not fit the series: it does not decode as the series codes it, or holds another
    image. ``slice_index`` names its slice, so a caller can name its file."""

    def __init__(self, slice_index: int, reason: str):
        super().__init__(slice_index, reason)  # the args rebuild it where a worker process raised it
        self.slice_index, self.reason = slice_index, reason

    def __str__(self) -> str:
        return f"the kept file of slice {self.slice_index} {self.reason}"
