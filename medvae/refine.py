"""Encoder-side latent refinement: fit a model's latents to one image before coding them.

A trained analysis transform ``g_a`` is a fast, amortized guess of good latents; it
is not the best latent for any one image, and an undertrained ``g_a`` is far from it.
Refinement starts from that guess (``model.analyze(x)``: ``[y, z]`` or ``[y]``) and
takes gradient steps on the loss the model was trained with, ``bits/pixel +
λ·255²·MSE``, with the latents rounded in the forward pass as the entropy coder
rounds them (straight-through gradients) and a learning rate that decays to zero
(cosine). The best iterate, the starting point included, is then entropy-coded
exactly as ``g_a``'s output would be.

Only the encoder changes. The bitstream format, the weights and the decoder are the
same, and nothing reaches the decoder but the coded bytes. Encoding costs ``steps``
backward and ``steps + 1`` forward passes of the decoder half. The method is that of
Campos et al., "Content adaptive optimization for neural image compression" (CVPR-W
2019); Yang et al., "Improving inference for neural image compression" (NeurIPS 2020)
study it further (with stochastic annealing in place of straight-through rounding).

The rate uses CompressAI 1.2.8's entropy-model internals (``_likelihood``,
``_get_medians``; the version is pinned), so that it is the very estimate the models
were trained with.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel
from torch import Tensor

from medvae.errors import InputError
from medvae.losses import RateDistortionLoss
from medvae.models.layers import round_straight_through

#: Gradient steps used when a caller asks for refinement without a count.
DEFAULT_STEPS = 50
#: Adam's starting learning rate (latents are O(1) to O(10)); it decays to 0 by the last step.
DEFAULT_LR = 1e-2


def _round_like_bottleneck(bottleneck: EntropyBottleneck, v: Tensor) -> Tensor:
    """Round ``v`` (B, C, H, W) around the bottleneck's medians, as its coder does."""
    medians = bottleneck._get_medians().reshape(1, -1, 1, 1)
    return round_straight_through(v - medians) + medians


def _bottleneck_likelihood(bottleneck: EntropyBottleneck, v_hat: Tensor) -> Tensor:
    """Likelihoods the factorized prior assigns to the rounded ``v_hat`` (B, C, H, W)."""
    values = v_hat.transpose(0, 1).reshape(v_hat.size(1), 1, -1)  # the (C, 1, N) layout it expects
    likelihood, _, _ = bottleneck._likelihood(values)
    return bottleneck.likelihood_lower_bound(likelihood)


def quantized_forward(model: CompressionModel, latents: list[Tensor]) -> dict[str, Any]:
    """The model's output (``x_hat``, ``likelihoods``) for ``latents`` rounded as the coder rounds
    them; gradients pass the rounding.

    ``x_hat`` is what :meth:`decompress` would return for these latents, and the
    likelihoods are the entropy models' estimate of their coded size, in the form
    :class:`~medvae.losses.RateDistortionLoss` reads in training.
    """
    bottleneck = model.entropy_bottleneck
    if len(latents) == 1:  # factorized prior: y through the bottleneck
        y_hat = _round_like_bottleneck(bottleneck, latents[0])
        return {"x_hat": model.synthesize(y_hat), "likelihoods": {"y": _bottleneck_likelihood(bottleneck, y_hat)}}
    y, z = latents  # scale hyperprior: z through the bottleneck, y through the Gaussian conditional
    z_hat = _round_like_bottleneck(bottleneck, z)
    features = model.hyper_decode(z_hat)
    conditional = model.gaussian_conditional
    if hasattr(model, "conditional_parameters"):  # means and a context (medvae-ctx): round around the means
        scales, means = model.conditional_parameters(y, features)
        y_hat = round_straight_through(y - means) + means
        y_likelihood = conditional.likelihood_lower_bound(conditional._likelihood(y_hat, scales, means))
    else:
        y_hat = round_straight_through(y)
        y_likelihood = conditional.likelihood_lower_bound(conditional._likelihood(y_hat, model.scales_from(features)))
    return {
        "x_hat": model.synthesize(y_hat, features),
        "likelihoods": {"y": y_likelihood, "z": _bottleneck_likelihood(bottleneck, z_hat)},
    }


def check_refinement(steps: int, lmbda: float | None) -> None:
    """Raise :class:`InputError` unless ``steps`` is a whole number >= 0 and ``lmbda`` > 0 (or None)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"refinement steps must be a whole number >= 0, got {steps!r}")
    if lmbda is not None and not lmbda > 0:
        raise InputError(f"refinement needs lambda > 0, got {lmbda!r}")


def refine_latents(
    model: CompressionModel,
    x: Tensor,
    lmbda: float,
    *,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    size: tuple[int, int] | None = None,
) -> list[Tensor]:
    """Latents for ``x`` that lower ``bits/pixel + λ·255²·MSE`` below what ``model.analyze`` gives.

    Args:
        model: a MedVAE model (factorized or hyperprior), in eval mode; its weights do not change.
        x: the normalized image, (1, C, H, W) in [0, 1], padded to the model's stride.
        lmbda: λ of the rate–distortion trade-off (the one the weights were trained with
            keeps the rate near the unrefined one; a larger λ buys fidelity with bits).
        steps: gradient steps; 0 returns ``model.analyze(x)``.
        lr: Adam's starting learning rate, decayed to 0 along a cosine.
        size: (H, W) of the image before padding; the loss counts those pixels only.

    Returns:
        The latents (detached) for :meth:`compress_latents`: never worse, by the loss
        estimate, than the unrefined ones.
    """
    check_refinement(steps, lmbda)
    if lmbda is None:
        raise InputError("refinement needs the lambda to aim at")
    # Gradients are needed even when the caller runs under no_grad or inference_mode; tensors
    # made in inference mode cannot be saved for backward, hence the clones.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        with torch.no_grad():
            start = model.analyze(x)
        if steps == 0:
            return start
        h, w = size if size is not None else x.shape[-2:]
        target = x[..., :h, :w]
        latents = [t.detach().clone().requires_grad_(True) for t in start]
        optimizer = torch.optim.Adam(latents, lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        best, best_loss = start, math.inf
        criterion = RateDistortionLoss(lmbda)  # the training loss, with MSE
        for step in range(steps + 1):
            out = quantized_forward(model, latents)
            x_hat = out["x_hat"][..., :h, :w].clamp(0.0, 1.0)  # the decoder crops and clips to [0, 1]
            loss = criterion({"x_hat": x_hat, "likelihoods": out["likelihoods"]}, target)["loss"]
            if loss.item() < best_loss:
                best, best_loss = [t.detach().clone() for t in latents], loss.item()
            if step == steps:
                break
            for latent, grad in zip(latents, torch.autograd.grad(loss, latents)):
                latent.grad = grad
            optimizer.step()
            schedule.step()
    return best
