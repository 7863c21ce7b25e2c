"""The residual layer: lossless and near-lossless coding on top of the lossy base.

:mod:`~medvae.residual.model` (the learned context model, float, for training),
:mod:`~medvae.residual.tables` (integer CDF tables and exact logarithms),
:mod:`~medvae.residual.coder` (the exact four-pass coder and its error bound),
:mod:`~medvae.residual.weights` (calibration, saving, fingerprints),
:mod:`~medvae.residual.training` (training on base reconstructions).
"""
