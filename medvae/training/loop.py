"""The one training loop: ``R + λD`` with an auxiliary optimizer, validation, TensorBoard, resume.

``train.py``, ``medvae train`` and ``torchrun ... train.py`` all run :func:`train`.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from compressai.models import CompressionModel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from medvae.checkpoint import load_model, save_model
from medvae.errors import MedVAEError
from medvae.losses import RateDistortionLoss
from medvae.models import create
from medvae.models.widen import initialize_from
from medvae.training import distributed
from medvae.training.data import build_train_dataset, build_validation_images
from medvae.training.sampler import EpochSampler
from medvae.training.step import train_step
from medvae.training.validation import validate


def _aux_parameter_names(model: CompressionModel) -> set[str]:
    # EntropyBottleneck quantiles are trained only by the auxiliary loss.
    return {n for n, p in model.named_parameters() if n.endswith(".quantiles")}


def make_optimizers(model: CompressionModel, optim: dict[str, Any]) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for the transforms and entropy model; a separate Adam for the quantiles (aux loss)."""
    aux_names = _aux_parameter_names(model)
    params = dict(model.named_parameters())
    main = [p for n, p in params.items() if n not in aux_names and p.requires_grad]
    aux = [params[n] for n in sorted(aux_names)]
    return torch.optim.Adam(main, lr=optim["lr"]), torch.optim.Adam(aux, lr=optim["aux_lr"])


def make_scheduler(optimizer: torch.optim.Optimizer, optim: dict[str, Any], iterations: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-iteration LR schedule: constant, multistep (milestones as fractions) or cosine."""
    name = optim["scheduler"]
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if name == "multistep":
        milestones = [int(f * iterations) if f < 1 else int(f) for f in optim["milestones"]]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=optim["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations, eta_min=optim["lr"] * 0.01)
    raise MedVAEError(f"unknown scheduler {name!r}: use constant, multistep or cosine")


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(config: dict[str, Any], *, resume: str | Path | None = None, amp: bool = False, device: str | None = None) -> Path:
    """Train the model ``config`` describes; returns the output folder (checkpoints, TensorBoard, config).

    Args:
        config: a config from :func:`medvae.config.load_config`.
        resume: a checkpoint written by this loop (``OUT/last.pt``), or ``"auto"`` for
            ``OUT/last.pt`` when it exists. Model, optimizers, scheduler, step, RNG
            states and data position are restored, so the run continues as if never stopped.
        amp: bfloat16 autocast on CUDA (ignored with a warning on CPU).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
    """
    runtime = distributed.setup(device)
    try:
        return _train(config, runtime, resume, amp)
    finally:
        distributed.teardown()


def _train(cfg: dict[str, Any], runtime: distributed.Runtime, resume: str | Path | None, amp: bool) -> Path:
    tcfg, dcfg, ocfg = cfg["train"], cfg["data"], cfg["optim"]
    out_dir = Path(tcfg["out_dir"])
    last_path = out_dir / "last.pt"
    if resume == "auto":
        resume = last_path if last_path.is_file() else None
    if resume is None and last_path.exists():
        raise MedVAEError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose another out_dir")
    if amp and runtime.device.type != "cuda":
        print("medvae train: --amp needs CUDA; training in float32 on CPU")
        amp = False

    seed = int(tcfg["seed"])
    _seed_everything(seed + runtime.rank)
    mcfg = cfg["model"]
    model = create(mcfg["name"], N=mcfg["N"], M=mcfg["M"], in_channels=mcfg["in_channels"])
    if tcfg["init_from"] and resume is None:
        initialize_from(model, load_model(tcfg["init_from"]))
        if runtime.is_main:
            print(f"medvae train: starting from the weights in {tcfg['init_from']}")
    model.to(runtime.device)
    iterations = int(tcfg["iterations"])
    optimizer, aux_optimizer = make_optimizers(model, ocfg)
    scheduler = make_scheduler(optimizer, ocfg, iterations)
    criterion = RateDistortionLoss(cfg["loss"]["lmbda"], cfg["loss"]["distortion"])

    step, best_val, pending_rng = 0, math.inf, None
    if resume is not None:
        state = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        model.to(runtime.device)
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_val = int(state["step"]), float(state["best_val_loss"])
        pending_rng = state["rng"][runtime.rank] if runtime.rank < len(state["rng"]) else None

    dataset = build_train_dataset(dcfg, seed)
    batch_size = int(dcfg["batch_size"])
    sampler = EpochSampler(len(dataset), int(dcfg["epoch_size"]), seed, runtime.rank, runtime.world_size)
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch == 0:
        raise MedVAEError(f"epoch_size per process ({len(sampler)}) is smaller than batch_size ({batch_size})")
    val_images = build_validation_images(dcfg) if runtime.is_main else []

    net: torch.nn.Module = model
    if runtime.distributed:
        # Quantiles get gradients only from the aux loss; CDF buffers are identical on all ranks.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(_aux_parameter_names(model)))
        net = DistributedDataParallel(
            model,
            device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            broadcast_buffers=False,
        )

    writer = None
    if runtime.is_main:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        writer = SummaryWriter(str(out_dir / "tb"), purge_step=step + 1 if resume else None)

    def checkpoint(path: Path) -> None:
        rng = [_rng_state()]  # rank 0's state; other ranks' streams are re-derived from the seed
        save_model(
            model,
            path,
            calibration=[item.pixels for item in val_images],
            optimizer=optimizer.state_dict(),
            aux_optimizer=aux_optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=step,
            best_val_loss=best_val,
            config=cfg,
            rng=rng,
        )

    progress = tqdm(
        total=iterations,
        initial=step,
        disable=not runtime.is_main,
        dynamic_ncols=True,
        desc="train",
        mininterval=0.5 if sys.stderr.isatty() else 60.0,  # a log file gets a line a minute, not a flood
    )
    sums: dict[str, float] = {}
    window_start, window_steps = time.perf_counter(), 0
    net.train()
    while step < iterations:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=int(dcfg["workers"]),
            drop_last=True,
            generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1009 + runtime.rank),
            pin_memory=runtime.device.type == "cuda",
        )
        for i, batch in enumerate(loader):
            if i < skip:
                continue  # resumed mid-epoch: these batches were trained on before the stop
            if pending_rng is not None:
                _set_rng_state(pending_rng)
                pending_rng = None
            x = batch.to(runtime.device, non_blocking=True)
            values = train_step(net, model, x, criterion, optimizer, aux_optimizer, float(ocfg["clip_grad"] or 0), amp)
            scheduler.step()
            step += 1
            window_steps += 1

            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            progress.update(1)
            progress.set_postfix(loss=f"{values['loss']:.4g}", bpp=f"{values['bpp']:.3f}", refresh=False)
            if not all(math.isfinite(v) for v in values.values()):
                raise MedVAEError(f"non-finite loss at step {step}: {values}")

            if writer is not None and step % int(tcfg["log_interval"]) == 0:
                elapsed = time.perf_counter() - window_start
                for k, v in sums.items():
                    writer.add_scalar(f"train/{k}", v / window_steps, step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                writer.add_scalar("train/images_per_sec", window_steps * batch_size * runtime.world_size / elapsed, step)
                sums, window_start, window_steps = {}, time.perf_counter(), 0

            at_end = step >= iterations
            if runtime.is_main and (step % int(tcfg["val_interval"]) == 0 or at_end):
                val, preview = validate(model, val_images, criterion, runtime.device)
                model.train()
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, step)
                if preview is not None and (step % int(tcfg["image_interval"]) == 0 or at_end):
                    writer.add_image("val/original|decoded|error", preview[None], step)
                if val and val["loss"] < best_val:
                    best_val = val["loss"]
                    checkpoint(out_dir / "best.pt")
                if val:
                    progress.write(
                        f"step {step}: val loss {val['loss']:.4f} bpp {val['bpp']:.3f} "
                        f"PSNR {val['psnr']:.2f} dB MS-SSIM {val['ms_ssim']:.4f}"
                    )
            if runtime.is_main and (step % int(tcfg["checkpoint_interval"]) == 0 or at_end):
                checkpoint(last_path)
                writer.flush()
            if at_end:
                break
    progress.close()
    if writer is not None:
        if not (out_dir / "best.pt").exists():
            checkpoint(out_dir / "best.pt")  # no validation data: the last weights are the best we know
        writer.close()
    distributed.barrier(runtime)
    return out_dir
