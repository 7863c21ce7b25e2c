"""Widen a trained hyperprior model's latent (more channels M) without changing what it computes.

Why: with 16× downsampling a latent of M channels carries M/256 values per
pixel. At M=96 that is 0.375, too few to reproduce CT noise at high rates. (For
the shipped weights the trained transforms were the tighter limit: even with y
unquantized they stop near 53 dB on CT, see ``benchmarks/ceiling.py``.) Training a wider
model from scratch costs what the first one did; widening a trained one lets a
high-λ fine-tune start from everything it already learned (the Net2Net idea:
Chen, Goodfellow and Shlens, ICLR 2016).

The widened model starts as the same function: every new latent channel reaches
the layers that read the latent through zero weights, so the image, and the
distribution of the old channels, are unchanged until training moves them.
"""

from __future__ import annotations

import torch
from compressai.models import CompressionModel
from torch import nn

from medvae.errors import MedVAEError
from medvae.models.registry import create


def widen_latent(model: CompressionModel, M: int) -> CompressionModel:
    """A copy of ``model`` with ``M`` latent channels, computing the same image as ``model``.

    Only convolutions change shape. Along a latent-sized axis (M, or a
    concatenation of k latent-sized tensors, k·M) the old channels keep their
    weights; new output channels keep a fresh initialization and new input
    channels get zero weights. Every other tensor is copied as it is.

    Raises:
        MedVAEError: ``M`` is smaller than the model's, or the model codes its
            latent with a per-channel entropy bottleneck (``bls2017``), whose
            learned densities cannot be extended this way.
    """
    old_m = int(model.config["M"])
    if M < old_m:
        raise MedVAEError(f"cannot narrow the latent from M={old_m} to M={M}")
    widened = create(model.model_name, **{**model.config, "M": int(M)})
    old_state = model.state_dict()
    new_state = {k: v.clone() for k, v in widened.state_dict().items()}
    if old_state["entropy_bottleneck.quantiles"].shape != new_state["entropy_bottleneck.quantiles"].shape:
        raise MedVAEError(f"{model.model_name!r} codes y with a per-channel entropy bottleneck; only hyperprior models can be widened")

    conv_kinds = {name: type(m) for name, m in widened.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    with torch.no_grad():
        for key, new in new_state.items():
            old = old_state[key]
            module, _, param = key.rpartition(".")
            if old.shape == new.shape or key.split(".")[0] in _ENTROPY_MODELS:
                new_state[key] = old.clone()  # coder tables may differ in size: load_state_dict resizes them
                continue
            if module not in conv_kinds:
                raise MedVAEError(f"{key}: shape {tuple(old.shape)} -> {tuple(new.shape)} outside a convolution")
            if param == "weight":
                # Conv2d weights are (out, in, k, k); transposed ones are (in, out, k, k).
                in_dim = 0 if conv_kinds[module] is nn.ConvTranspose2d else 1
                out_dim = 1 - in_dim
                keep_in = _channel_index(old.shape[in_dim], new.shape[in_dim], old_m, M)
                keep_out = _channel_index(old.shape[out_dim], new.shape[out_dim], old_m, M)
                added_in = torch.ones(new.shape[in_dim], dtype=torch.bool)
                added_in[keep_in] = False
                # New input channels read with zero weights, so they cannot change an old output.
                new.index_fill_(in_dim, added_in.nonzero().flatten(), 0.0)
                rows = new.index_select(out_dim, keep_out).index_copy_(in_dim, keep_in, old)
                new.index_copy_(out_dim, keep_out, rows)
            else:  # bias: one value per output channel
                new.index_copy_(0, _channel_index(old.shape[0], new.shape[0], old_m, M), old)
    widened.load_state_dict(new_state)
    return widened


#: Entropy models of a hyperprior model: their sizes depend on N only, never on M.
_ENTROPY_MODELS = {"entropy_bottleneck", "gaussian_conditional"}


def _channel_index(old_size: int, new_size: int, old_m: int, new_m: int) -> torch.Tensor:
    """Where the old channels of an axis sit on the widened axis."""
    if old_size == new_size:
        return torch.arange(old_size)
    groups, rest = divmod(old_size, old_m)
    if rest or new_size != groups * new_m:
        raise MedVAEError(f"axis of {old_size} channels is not a multiple of M={old_m}")
    return torch.cat([torch.arange(g * new_m, g * new_m + old_m) for g in range(groups)])


def initialize_from(model: CompressionModel, source: CompressionModel) -> None:
    """Start ``model`` from ``source``'s learned parameters (fine-tuning another λ or a wider latent).

    Only parameters are copied: buffers (entropy coder tables, likelihood
    bounds) are rebuilt for the run, so weights stored in float16 cannot carry
    a bound rounded to zero into training. A ``source`` with a narrower latent
    is widened first (:func:`widen_latent`).

    Raises:
        MedVAEError: a different family, or sizes other than a wider M.
    """
    if source.model_name not in (model.model_name, getattr(model, "base_family", None)):
        raise MedVAEError(f"cannot start a {model.model_name!r} model from {source.model_name!r} weights")
    def sizes(config: dict) -> dict:  # M is widened below; a variable-rate model's λ are its own
        return {k: v for k, v in config.items() if k not in ("M", "lmbdas")}

    if sizes(source.config) != sizes(model.config):
        raise MedVAEError(f"cannot start a model of {model.config} from weights of {source.config}")
    if source.config["M"] != model.config["M"]:
        source = widen_latent(source, int(model.config["M"]))
    learned = dict(source.named_parameters())
    renamed = getattr(model, "base_parameter_names", {}) if source.model_name != model.model_name else {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            name = next((old + name[len(new) :] for new, old in renamed.items() if name.startswith(new)), name)
            if name in learned:
                parameter.copy_(learned[name])
            elif source.model_name == model.model_name:
                raise MedVAEError(f"{source.model_name!r} weights lack the parameter {name}")
            # else: a parameter the base family has not (a variable-rate model's gains) keeps its start
