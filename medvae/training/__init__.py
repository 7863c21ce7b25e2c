"""Training: :func:`train` runs the loop a config describes."""

from medvae.training.loop import train

__all__ = ["train"]
