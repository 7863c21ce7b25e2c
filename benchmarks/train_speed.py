#!/usr/bin/env python
"""Training throughput (images/s) per model family at a given crop and batch, on this device.

Times :func:`medvae.training.step.train_step` (the loop's own step) on random crops, so
data loading is excluded: it measures the model, not the disk.

    python benchmarks/train_speed.py --crop 256 --batch 8 [--steps 5] [--N 128 --M 192] [--device cuda --amp]
"""

from __future__ import annotations

import argparse
import time

import torch

import medvae
from medvae.losses import RateDistortionLoss
from medvae.training.loop import make_optimizers
from medvae.training.step import train_step


def images_per_second(name: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = medvae.models.create(name, N=args.N, M=args.M).to(device).train()
    optimizer, aux_optimizer = make_optimizers(model, {"lr": 1e-4, "aux_lr": 1e-3})
    criterion = RateDistortionLoss(0.3, "mse")
    x = torch.rand(args.batch, 1, args.crop, args.crop, device=device)
    for _ in range(args.warmup):
        train_step(model, model, x, criterion, optimizer, aux_optimizer, 1.0, args.amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, model, x, criterion, optimizer, aux_optimizer, 1.0, args.amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--M", type=int, default=192)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--families", default=",".join(medvae.models.available()))
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput, crop {args.crop}, batch {args.batch}, N={args.N} M={args.M}, {device_name}"
          f"{', bf16 autocast' if args.amp else ''}, {args.steps} timed steps")
    print(f"{'model':<14}{'images/s':>10}{'s/step':>9}")
    for name in args.families.split(","):
        rate = images_per_second(name, args)
        print(f"{name:<14}{rate:>10.2f}{args.batch / rate:>9.2f}")


if __name__ == "__main__":
    main()
