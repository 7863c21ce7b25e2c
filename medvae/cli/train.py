"""``medvae train``: the same entry point as ``train.py`` (and ``torchrun ... train.py``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``train.py`` and ``medvae train``."""
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. loss.lmbda=0.0067 train.iterations=2000")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, help="continue from a checkpoint (default: OUT/last.pt)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA, or a CPU with AVX-512-BF16: about 1.9x faster there; many times slower on a CPU without it, which it warns of)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def run(args: argparse.Namespace) -> int:
    from medvae.config import load_config
    from medvae.training import train

    config = load_config(args.config, args.overrides)
    out_dir = train(config, resume=args.resume, amp=args.amp, device=args.device)
    print(f"checkpoints and TensorBoard logs in {out_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config", description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)
