"""MedVAE: learned compression of medical images into real bitstreams.

>>> import medvae
>>> codec = medvae.Codec(medvae.models.create("medvae", N=64, M=96))
>>> data = codec.compress(image)          # 2-D uint8 / uint16 / int16 array
>>> restored = codec.decompress(data)     # same shape and dtype

Names that need PyTorch (``models``, ``Codec``, ``load``, ``compress``,
``decompress``) are imported on first use, so ``medvae.io`` and ``medvae info``
start without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from medvae.bitstream import Header, read_header, read_metadata
from medvae.errors import BitstreamError, InputError, MedVAEError

__version__ = "0.2.0"

_LAZY = {
    "models": ("medvae.models", None),
    "Codec": ("medvae.codec", "Codec"),
    "load": ("medvae.codec", "load"),
    "compress": ("medvae.codec", "compress"),
    "decompress": ("medvae.codec", "decompress"),
    "LegacyFormatWarning": ("medvae.codec", "LegacyFormatWarning"),
}

__all__ = [
    "BitstreamError",
    "Codec",
    "Header",
    "InputError",
    "LegacyFormatWarning",
    "MedVAEError",
    "compress",
    "decompress",
    "load",
    "models",
    "read_header",
    "read_metadata",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medvae' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
