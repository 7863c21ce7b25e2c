"""``medvae-vr``: the MedVAE architecture with gain units, one set of weights for every rate.

The flagship's transforms, hyperprior and residual skip-fusion, unchanged; a
:class:`~medvae.models.gain.GainUnit` scales ``y`` after the analysis transform and
another scales ``ŷ`` back before the fusion and synthesis. Each level is trained with
its own λ (:data:`LMBDAS`); training draws a level per sample, so every step trains
all of them on the same transforms. ``quality`` is a number from 1 to ``len(LMBDAS)``
(multiples of 1/256), or down to 0, extrapolated (:mod:`medvae.models.gain`): the integer
qualities 1–6 are the λ of the shipped ladder's ``medvae`` qualities 1–6, and 7 reaches
beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medvae.models.gain import QUALITY_UNITS, GainUnit, mix, quality_units
from medvae.models.hyperprior import MedVAE
from medvae.models.registry import register_model

#: λ of each level (CompressAI's scale, D = 255²·MSE): the shipped ladder's q1–q6, then 5.0.
LMBDAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.2, 5.0)
#: The level whose λ the gains start at 1 for; the others start at ``sqrt(λ / λ_ref)``
#: (a quantization step ∝ 1/sqrt(λ)), so fine-tuning from weights trained at λ_ref starts
#: near every level's operating point.
REFERENCE_LMBDA = 0.3
#: The quality outside training unless set (λ 0.3, the ladder's default q5; the top level
#: of a model with fewer levels).
DEFAULT_QUALITY = 5


@register_model("medvae-vr")
class MedVAEVR(MedVAE):
    r"""MedVAE with gain units (see the module docstring); ``lmbdas``: λ per level, lowest first.

    .. code-block:: none

                 ┌────────┐ y  ┌──────┐ y·g   ┌───┐  ┌───┐ z_hat  ┌──────────────┐
           x ──►─┤g_a + RB├──►─┤ gain ├──┬──►─┤h_a├─►┤ Q ├──►─·⋯·─►┤ h_s (+skip)  ├──► F ──► scales
                 └────────┘    └──────┘  │    └───┘  └───┘   EB   └──────────────┘
                                       ┌─┴─┐
                                       │ Q │ ·⋯· GC (scales)
                                       └─┬─┘
                                   y_hat ▼        ┌──────────────┐ ┌──────────────────┐ ┌────────┐
                                         └───────►┤ inverse gain ├►┤ fusion with F    ├►┤g_s + RB├──► x_hat
                                                  └──────────────┘ └──────────────────┘ └────────┘

        gain, inverse gain: per-channel vectors of the quality (a level, or a mix of two)
    """

    #: Weights of this family may start from a trained ``medvae`` (all but the gains).
    base_family = "medvae"

    def __init__(self, N: int = 128, M: int = 192, in_channels: int = 1, lmbdas: Sequence[float] = LMBDAS):
        super().__init__(N=N, M=M, in_channels=in_channels)
        lmbdas = [float(v) for v in lmbdas]
        if len(lmbdas) < 2 or sorted(lmbdas) != lmbdas:
            raise ValueError(f"lmbdas must be at least two increasing values, got {lmbdas}")
        self.config["lmbdas"] = lmbdas
        start = torch.tensor([math.sqrt(v / REFERENCE_LMBDA) for v in lmbdas])[:, None].expand(-1, M)
        self.gain = GainUnit(start)
        self.inverse_gain = GainUnit(1 / start)
        self.quality = self.default_quality

    @property
    def levels(self) -> int:
        return len(self.config["lmbdas"])

    @property
    def default_quality(self) -> int:
        """:data:`DEFAULT_QUALITY`, or the top level of a model with fewer levels."""
        return min(DEFAULT_QUALITY, self.levels)

    @property
    def quality(self) -> float:
        """The quality :meth:`forward` and the float coder use outside training."""
        return self.gain.units / QUALITY_UNITS

    @quality.setter
    def quality(self, value: float) -> None:
        self.gain.units = self.inverse_gain.units = quality_units(value, self.levels)

    def lmbda_at(self, quality: float) -> float:
        """λ a quality aims at (geometric mix between levels; for logs and refinement)."""
        lmbdas = torch.tensor(self.config["lmbdas"], dtype=torch.float64)[:, None]
        return float(mix(lmbdas, quality_units(quality, self.levels)))

    def analyze(self, x: Tensor) -> list[Tensor]:
        return MedVAEVR.analyze_transformed(self, self.g_a(x))  # not self.…: the exact twin runs this too

    def analyze_transformed(self, transformed: Tensor) -> list[Tensor]:
        """The latents ``[y, z]`` at the quality set, from the analysis transform's output
        ``g_a(x)``, which no quality changes: rate control codes many qualities of one image
        from one pass of ``g_a`` (the exact twin runs this method too)."""
        y = self.gain(transformed)
        return [y, self.h_a(abs(y))]

    def synthesize(self, y_hat: Tensor, features: Tensor) -> Tensor:
        return self.g_s(self.fusion(self.inverse_gain(y_hat), features))

    def _forward(self, x: Tensor) -> dict[str, Any]:
        """The rate–distortion pass at the gains set (subclasses change the entropy model here)."""
        return super().forward(x)

    def forward(self, x: Tensor) -> dict[str, Any]:
        """While training, each sample gets a random level and the output says its λ
        (``"lmbda"``, per sample), which :class:`~medvae.losses.RateDistortionLoss` uses."""
        if not self.training:
            return self._forward(x) | {"lmbda": torch.full((x.shape[0],), self.lmbda_at(self.quality), device=x.device)}
        levels = torch.randint(self.levels, (x.shape[0],), device=x.device)
        self.gain.levels_in_batch = self.inverse_gain.levels_in_batch = levels
        try:
            out = self._forward(x)
        finally:
            self.gain.levels_in_batch = self.inverse_gain.levels_in_batch = None
        return out | {"lmbda": torch.tensor(self.config["lmbdas"], device=x.device)[levels]}


@register_model("medvae-vbr")
class MedVAEVBR(MedVAEVR):
    """``medvae-vr`` whose hyperprior does not depend on the quality (Kamisli et al., DCC 2024):
    ``h_a`` reads ``|g_a(x)|`` before the gain, and the scales of ``y·g`` are ``h_s``'s scales
    times the same gain ``g``. Fine-tuned from a ``medvae``, every level then starts with the
    scales its latent has (a latent scaled by ``g`` has ``g`` times the spread), where
    ``medvae-vr``'s hyperprior must first learn to read latents ``g`` times too large or small.
    Exactness: the twin multiplies the scales by the same :class:`~medvae.exact.layers.ExactGain`
    as ``y`` (integer gains times the fixed-point scale, exact in float64, rounded once), and the
    table index is an exact comparison of that scale, so the indexes depend on the weights and the
    file's quality alone, as ``medvae-vr``'s do.

    .. code-block:: none

                 ┌────────┐ y  ┌──────┐ y·g
           x ──►─┤g_a + RB├─┬►─┤ gain ├──────────────┐          ┌──────────────┐  ┌──────┐
                 └────────┘ │  └──────┘              │   ┌──────┤ h_s (+skip)  ├─►┤ gain ├──► scales·g
                            │  ┌───┐  ┌───┐ z_hat    │   │ F    └──────────────┘  └──────┘
                            └─►┤h_a├─►┤ Q ├──►─·⋯·───┼───┘        ▲ (EB)
                               └───┘  └───┘          │ Q ·⋯· GC (scales·g)
                                             y_hat ▼ ┌──────────────┐ ┌───────────────┐ ┌────────┐
                                                   └►┤ inverse gain ├►┤ fusion with F ├►┤g_s + RB├──► x_hat
                                                     └──────────────┘ └───────────────┘ └────────┘
    """

    def analyze(self, x: Tensor) -> list[Tensor]:
        return MedVAEVBR.analyze_transformed(self, self.g_a(x))  # explicit class: the exact twin runs this too

    def analyze_transformed(self, transformed: Tensor) -> list[Tensor]:
        return [self.gain(transformed), self.h_a(abs(transformed))]

    def scales_from(self, features: Tensor) -> Tensor:
        return self.gain(MedVAE.scales_from(self, features))
