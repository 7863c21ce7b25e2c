"""MedVAE: learned compression of medical images into real bitstreams.

>>> import medvae
>>> codec = medvae.Codec(medvae.models.create("medvae", N=64, M=96))
>>> data = codec.compress(image)          # 2-D uint8 / uint16 / int16 array
>>> restored = codec.decompress(data)     # same shape and dtype
"""

__version__ = "0.1.0"

from medvae import models
from medvae.bitstream import Header, read_header, read_metadata
from medvae.codec import Codec, compress, decompress, load
from medvae.errors import BitstreamError, InputError, MedVAEError

__all__ = [
    "BitstreamError",
    "Codec",
    "Header",
    "InputError",
    "MedVAEError",
    "compress",
    "decompress",
    "load",
    "models",
    "read_header",
    "read_metadata",
]
