"""``medvae train-residual``: train the residual layer (lossless and near-lossless coding) of a base model.

The base (shipped weights or a checkpoint) codes every training slice once, exactly as the
coder will; the residual model then learns the cost of what is left, on random crops. The
result is a file ``medvae.residual.weights.load_residual`` reads, calibrated for exact coding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="MANIFEST", help="corpus manifest (path, modality, patient, split)")
    parser.add_argument("--out", required=True, metavar="FILE", help="residual model file to write (refused if it exists)")
    parser.add_argument("--model", default="medvae", metavar="NAME|CHECKPOINT", help="the base (default: shipped medvae)")
    parser.add_argument("--quality", type=int, default=None, help="quality of a shipped base")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (on the CPU: slower for this small network)")
    parser.add_argument("--device", default="cpu", help="where the base codes the slices and the model trains (cpu, cuda)")
    parser.add_argument("--minutes", type=float, help="fit the run into this wall time (fewer --steps if need be; "
                        "not with --checkpoint)")
    parser.add_argument("--pairs", metavar="NPZ", help="cache of the base reconstructions (made if missing)")
    parser.add_argument("--init", metavar="FILE", help="start from this residual model")
    parser.add_argument("--channels", type=int, help="hidden channels (default: those of --init, else 24); "
                        "wider than --init starts from it, widened without changing what it computes")
    parser.add_argument("--blocks", type=int, help="residual blocks before the last layer (default: those of --init, else 0); "
                        "more than --init starts from it, deepened without changing what it computes")
    parser.add_argument("--series", nargs="?", const=1, default=0, type=int, metavar="N",
                        help="a series model: each slice of a volume also conditions on the N slices before it "
                        "(1, the default, or 2; trained on the volumes' consecutive slices; --init starts from a plain "
                        "model, or one reading fewer slices, unchanged)")
    parser.add_argument("--max-errors", default="0", metavar="T,T,…",
                        help="error bounds to train for (default 0: lossless); with any other, the model also reads the "
                        "error bound of each decoded residual (--init starts from a model that does not, unchanged), and "
                        "each crop is coded with one of them, its later passes reading residuals as the decoder has them")
    parser.add_argument("--law", choices=("laplace", "mixed"), default="laplace",
                        help="the laws the loss codes under: laplace (default), or the mixed law the encoder picks "
                        "for nearly every pass of formats 15 to 17 (docs/lossless.md, \"The law's family\")")
    parser.add_argument("--base-step", type=int, default=4, metavar="QUARTERS",
                        help="the base latent's quantization step in quarters (default 4: the unit; a series slice's base "
                        "is coded with 5 losslessly, 6 at bounds 1-2, 7 above: medvae.prediction.base_step)")
    parser.add_argument("--noise-step", action="store_true",
                        help="each slice's base latent at the coarser of --base-step and the step its noise calls for "
                        "(medvae.prediction.noise_step), as a slice coded alone is coded")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="training state, written every 500 steps; an existing one is resumed")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import medvae
    from medvae.io.slices import manifest_slices
    from medvae.prediction import STEPS, UNIT_STEP
    from medvae.residual.model import CHANNELS, ResidualModel, deepened, widened, with_bounds, with_previous
    from medvae.residual.training import base_pairs, evaluate_bpp, load_pairs, save_pairs, series_pairs, train_residual
    from medvae.residual.weights import Residual, calibrate_residual, load_residual, save_residual
    from medvae.series import MAX_PREVIOUS

    max_errors = _max_errors(args.max_errors)
    if args.series not in range(MAX_PREVIOUS + 1):
        raise SystemExit(f"medvae train-residual: --series takes 1 or {MAX_PREVIOUS} previous slices, not {args.series}")
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"medvae train-residual: {out} exists; choose another --out")
    codec = medvae.load(args.model, args.quality, device=args.device)  # exact: the same bases on any device

    if args.base_step not in STEPS:
        raise SystemExit(f"medvae train-residual: --base-step takes {STEPS.start} to {STEPS.stop - 1} quarters, not {args.base_step}")
    step_name = ("" if args.base_step == UNIT_STEP else f".step{args.base_step}") + (".noise" if args.noise_step else "")  # each step its own cache

    def pairs_of(split: str):
        cache = Path(f"{args.pairs}{step_name}.{split}.npz") if args.pairs else None
        slices = manifest_slices(args.data, split=split) if args.series or not (cache and cache.exists()) else None
        if cache and cache.exists():
            pairs = load_pairs(cache)
        else:
            pairs = base_pairs(codec, slices, base_step=args.base_step, noise_step=args.noise_step)
            if cache:
                save_pairs(pairs, cache)
        if not args.series:
            return pairs
        if len(pairs) != len(slices) or any(not np.array_equal(p.image, s.pixels) for p, s in zip(pairs, slices)):
            raise SystemExit(f"medvae train-residual: {cache} holds other slices than the {split} split of {args.data}; "
                             "choose another --pairs")
        return series_pairs(pairs, slices, args.series)

    train, val = pairs_of("train"), pairs_of("val")
    torch.manual_seed(0)  # a fresh model starts the same in every run, so a resumed run recognises its start
    start = load_residual(args.init).model if args.init else ResidualModel(args.channels or CHANNELS)
    if args.channels and args.channels != start.channels:
        start = widened(start, args.channels)
    if args.blocks is not None and args.blocks != start.blocks:
        start = deepened(start, args.blocks)
    if start.previous > args.series:
        raise SystemExit(f"medvae train-residual: --init reads {start.previous} previous slice(s); give --series {start.previous} or more")
    if args.series > start.previous:
        start = with_previous(start, args.series)
    if max_errors != (0,) and not start.bounds:
        start = with_bounds(start)
    if not train:
        raise SystemExit(f"medvae train-residual: no training {'pairs of consecutive slices' if args.series else 'slices'} in {args.data}")
    model, log = train_residual(train, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, bf16=args.bf16,
                                model=start, val=val, checkpoint=args.checkpoint, device=args.device, minutes=args.minutes, max_errors=max_errors,
                                law=args.law)
    plan = calibrate_residual(model, train[:: max(1, len(train) // 40)])
    info = {
        "base": codec.name, "base_fingerprint": codec.fingerprint, "steps": log[-1]["step"] if log else args.steps, "batch": args.batch,
        "crop": args.crop, "lr": args.lr, "bf16": args.bf16, "base_step": args.base_step, "noise_step": args.noise_step, "device": args.device, "max_errors": list(max_errors), "train_slices": len(train),
        "law": args.law, "val_bpp": evaluate_bpp(model, val, law=args.law) if val else None, "log": log, "command": " ".join(["medvae", *sys.argv[1:]]),
    }
    save_residual(Residual(model, plan, info), out)
    print(json.dumps({k: v for k, v in info.items() if k != "log"}, indent=1))
    return 0


def _max_errors(text: str) -> tuple[int, ...]:
    """``--max-errors``: comma-separated error bounds of 0 or more."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise SystemExit(f"medvae train-residual: --max-errors takes error bounds of 0 or more, such as 0,1,2,4,8; not {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-residual", help="train the residual layer of lossless/near-lossless coding",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)
