"""Models registered by name, so checkpoints, bitstreams and configs can name them."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from compressai.models import CompressionModel

from medvae.errors import MedVAEError

_MODELS: dict[str, type[CompressionModel]] = {}

T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make a model constructible as ``create(name, ...)``."""

    def decorate(cls: T) -> T:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = cls
        cls.model_name = name
        return cls

    return decorate


def available() -> list[str]:
    """Names of every registered model family."""
    return sorted(_MODELS)


def create(name: str, **kwargs: Any) -> CompressionModel:
    """Build an (untrained) model of family ``name``, e.g. ``create("medvae", N=128, M=192)``."""
    try:
        cls = _MODELS[name]
    except KeyError:
        raise MedVAEError(f"unknown model {name!r}; available: {', '.join(available())}") from None
    return cls(**kwargs)
