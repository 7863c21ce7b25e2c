"""Model families, registered by name: ``bls2017``, ``balle2018``, ``bls-residual``, ``medvae``, ``medvae-vr``, ``medvae-vbr``, ``medvae-ctx``, ``rnn-conv``."""

from medvae.models.factorized import BLS2017, BLSResidual
from medvae.models.hyperprior import Balle2018, MedVAE
from medvae.models.rnn_conv import RNNConv
from medvae.models.variable_rate import MedVAEVR
from medvae.models.context import MedVAECtx
from medvae.models.registry import available, create, register_model

__all__ = ["BLS2017", "BLSResidual", "Balle2018", "MedVAE", "MedVAECtx", "MedVAEVR", "RNNConv", "available", "create", "register_model"]
