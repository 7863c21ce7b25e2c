#!/usr/bin/env python
"""Where a hyperprior model's PSNR levels off: the quantizer or the transforms?

Codes the corpus test slices (loaded as ``benchmarks/results.py`` loads them)
with the latent y quantized at a finer step ``s`` (``round(y / s) · s``, coded
with the hyperprior's scales divided by ``s``), and with y not quantized at all
(``s = 0``; z still is): the ceiling of the latents the encoder network gives.
If PSNR barely moves while the rate grows, bits are not what the model lacks:
better latents are (encoder-side refinement, :mod:`medvae.refine`, finds some
for the same decoder), or better transforms (training longer, wider, at a
higher λ).

The rate is the entropy models' estimate (bits of ``-log2`` likelihoods, y and
z), not a byte count: at ``s = 1`` it is within about 1 % of the real stream.

    python benchmarks/ceiling.py [--qualities 5,7] [--checkpoint PATH ...] [--steps 1,0.5,0.25,0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import medvae
from medvae.evaluation.datasets import load_images
from medvae.intensity import denormalize
from medvae.metrics import psnr

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/corpus/MANIFEST.csv"


@torch.inference_mode()
def code_at_step(codec: medvae.Codec, image: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """(decoded image, estimated bpp) with y quantized at ``step`` (0: y not quantized, bpp NaN).

    z is always quantized as the codec does. This runs the float model: at ``step`` 1 it
    is the codec's own decode up to the exact path's last-bit differences.
    """
    model = codec.model
    exceptions, value_range, x = codec._model_input(image, None, None)  # padding and extremes stored exactly, as the codec does
    y = model.g_a(x.tensor().float())
    z_hat, z_likelihoods = model.entropy_bottleneck(model.h_a(torch.abs(y)))
    features = model.hyper_decode(z_hat)
    bits = -torch.log2(z_likelihoods).sum()
    if step > 0:
        y_index, likelihoods = model.gaussian_conditional(y / step, model.scales_from(features) / step, training=False)
        bits = bits - torch.log2(likelihoods).sum()
        y = y_index * step
    else:
        bits = torch.tensor(float("nan"))
    x_hat = model.synthesize(y, features).clamp(0, 1)
    h, w = image.shape
    decoded = exceptions.restore(denormalize(x_hat[0, 0, :h, :w].cpu().numpy(), *value_range, image.dtype))
    return decoded, float(bits) / image.size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--split", default="test")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--qualities", default="5,7", help="shipped medvae qualities, comma-separated")
    parser.add_argument("--checkpoint", action="append", default=[], help="a checkpoint to measure as well (repeatable)")
    parser.add_argument("--steps", default="1,0.5,0.25,0", help="latent quantization steps; 0 = no quantization")
    args = parser.parse_args(argv)

    steps = [float(s) for s in args.steps.split(",")]
    sources = {f"medvae q{q}": ("medvae", int(q)) for q in args.qualities.split(",") if q}
    sources.update({path: (path, None) for path in args.checkpoint})
    codecs = {name: medvae.load(source, quality) for name, (source, quality) in sources.items()}
    for name, codec in codecs.items():
        if not hasattr(codec.model, "scales_from"):
            raise SystemExit(f"{name}: not a hyperprior model ({codec.name}); the step sweep needs its scales")
    slices = load_images([args.manifest], args.split, modality=args.modality)
    print(f"{args.modality} {args.split} split: {len(slices)} slices; PSNR at the native bit depth, mean over slices")
    print(f"{'model':28s} {'step':>5s} {'bpp (est.)':>10s} {'PSNR dB':>8s}")
    for name, codec in codecs.items():
        for step in steps:
            results = [code_at_step(codec, s.pixels, step) for s in slices]
            quality_db = np.mean([psnr(s.pixels, decoded, s.bits_stored) for s, (decoded, _) in zip(slices, results)])
            rate = np.mean([bpp for _, bpp in results])
            label = "none" if step == 0 else f"{step:g}"
            print(f"{name:28s} {label:>5s} {rate:10.3f} {quality_db:8.2f}", flush=True)


if __name__ == "__main__":
    main()
