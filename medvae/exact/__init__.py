"""Exact arithmetic for coding: every machine decodes a file to the same pixels.

* :mod:`medvae.exact.fixed`: fixed-point values and the argument why their sums are exact.
* :mod:`medvae.exact.layers`: exact twins of convolutions, GDN, activations, residual blocks.
* :mod:`medvae.exact.calibrate`: the plan of fractional bits, computed once per weights.
* :mod:`medvae.exact.twin`: a model's whole coding path (analysis, entropy coding, synthesis).
* :mod:`medvae.exact.context`: the same for ``medvae-ctx`` (two checkerboard passes, with means).
* :mod:`medvae.exact.progressive`: the same for the recurrent ``rnn-conv`` family.

Training keeps the float model; :class:`medvae.Codec` codes with the twin.
"""

from medvae.exact.calibrate import Plan, calibrate, synthetic_images
from medvae.exact.context import CheckerboardTwin
from medvae.exact.fixed import Fixed
from medvae.exact.progressive import ProgressiveTwin
from medvae.exact.twin import ExactTwin

#: Version of the rules that turn float weights and a plan into the exact twin. It is part
#: of the weights fingerprint a file names, so a change of rules can never silently
#: decode an older file differently.
EXACT_VERSION = 1



def exact_twin(model, plan: Plan) -> ExactTwin | ProgressiveTwin:
    """The exact coding path of ``model``: :class:`ProgressiveTwin` for ``rnn-conv``, :class:`CheckerboardTwin` for ``medvae-ctx``, else :class:`ExactTwin`."""
    from medvae.models.context import MedVAECtx
    from medvae.models.rnn_conv import RNNConv

    if isinstance(model, MedVAECtx):
        return CheckerboardTwin(model, plan)
    return ProgressiveTwin(model, plan) if isinstance(model, RNNConv) else ExactTwin(model, plan)


__all__ = ["EXACT_VERSION", "CheckerboardTwin", "ExactTwin", "ProgressiveTwin", "exact_twin", "Fixed", "Plan", "calibrate", "synthetic_images"]
