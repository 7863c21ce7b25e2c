"""The old ``medvae`` ladder's weights (qualities 1–4, 6 and 7), for decoding files written with them.

MedVAE codes with ``medvae-ctx`` by default and keeps the ladder's default quality 5 (the base
of lossless and near-lossless coding) in its own package; the other six qualities live here, so
that the default install stays small. :mod:`medvae.zoo` finds them when this package is installed.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).with_name("weights")
