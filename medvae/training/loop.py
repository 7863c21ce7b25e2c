"""The one training loop: ``R + λD`` with an auxiliary optimizer, validation, TensorBoard, resume.

``train.py``, ``medvae train`` and ``torchrun ... train.py`` all run :func:`train`.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
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
from medvae.training.budget import steps_that_fit
from medvae.training.data import build_train_dataset, build_validation_images
from medvae.training.sampler import EpochSampler, sample_weights
from medvae.training.step import slow_bf16, train_step
from medvae.training.validation import validate


def _aux_parameter_names(model: CompressionModel) -> set[str]:
    # EntropyBottleneck quantiles are trained only by the auxiliary loss.
    return {n for n, p in model.named_parameters() if n.endswith(".quantiles")}


def make_optimizers(model: CompressionModel, optim: dict[str, Any]) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for the transforms and entropy model; a separate Adam for the quantiles (aux loss)."""
    aux_names = _aux_parameter_names(model)
    params = dict(model.named_parameters())
    main = [p for n, p in params.items() if n not in aux_names and p.requires_grad]
    # A model without an entropy bottleneck (rnn-conv) gets a placeholder, so every checkpoint has one layout.
    aux = [params[n] for n in sorted(aux_names)] or [torch.nn.Parameter(torch.zeros(0))]
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
        amp: bfloat16 autocast (CUDA; CPUs with AMX, or AMD's with AVX-512-BF16, where it is about twice
            as fast; :func:`medvae.training.step.slow_bf16` warns where it is slower).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
    """
    runtime = distributed.setup(device)
    try:
        return _train(config, runtime, resume, amp)
    finally:
        distributed.teardown()


@dataclass
class _Run:
    """Everything one training run holds between steps (see :func:`_setup`)."""

    cfg: dict[str, Any]
    runtime: distributed.Runtime
    out_dir: Path
    model: CompressionModel
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: RateDistortionLoss
    dataset: Any
    sampler: EpochSampler
    val_images: list
    writer: Any  # TensorBoard SummaryWriter on the main process, else None
    amp: bool
    step: int = 0
    best_val: float = math.inf
    pending_rng: dict[str, Any] | None = None  # RNG state to restore before the next step (resume)

    @property
    def batch_size(self) -> int:
        return int(self.cfg["data"]["batch_size"])

    @property
    def iterations(self) -> int:
        return int(self.cfg["train"]["iterations"])


def _resolve_resume(out_dir: Path, resume: str | Path | None) -> Path | None:
    """The checkpoint to resume from (``"auto"``: ``last.pt`` if present); refuses to start a
    new run over an existing one."""
    last_path = out_dir / "last.pt"
    if resume == "auto":
        resume = last_path if last_path.is_file() else None
    if resume is None and last_path.exists():
        raise MedVAEError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose another out_dir")
    return None if resume is None else Path(resume)


def _setup(cfg: dict[str, Any], runtime: distributed.Runtime, resume: str | Path | None, amp: bool) -> _Run:
    """Model, optimizers, data and logging for a run, restored from ``resume`` when given."""
    tcfg, dcfg, ocfg, mcfg = cfg["train"], cfg["data"], cfg["optim"], cfg["model"]
    out_dir = Path(tcfg["out_dir"])
    resume = _resolve_resume(out_dir, resume)
    seed = int(tcfg["seed"])
    _seed_everything(seed + runtime.rank)
    levels = {} if mcfg["lmbdas"] is None else {"lmbdas": mcfg["lmbdas"]}
    model = create(mcfg["name"], N=mcfg["N"], M=mcfg["M"], in_channels=mcfg["in_channels"], **levels)
    if tcfg["init_from"] and resume is None:
        initialize_from(model, load_model(tcfg["init_from"]))
        if runtime.is_main:
            print(f"medvae train: starting from the weights in {tcfg['init_from']}")
    model.to(runtime.device)
    slow = slow_bf16(runtime.device) if amp and runtime.is_main else None
    if slow:
        print(f"medvae train: warning: --amp (bfloat16 autocast) trains slower than float32 on this CPU ({slow}); drop --amp",
              file=sys.stderr)
    optimizer, aux_optimizer = make_optimizers(model, ocfg)
    scheduler = make_scheduler(optimizer, ocfg, int(tcfg["iterations"]))

    dataset = build_train_dataset(dcfg, seed)
    powers = {"slices": None, "patients": 1.0, "sqrt-patients": 0.5}
    if dcfg["balance"] not in powers:
        raise MedVAEError(f"data.balance must be one of {', '.join(powers)}, not {dcfg['balance']!r}")
    power = powers[dcfg["balance"]]
    weights = sample_weights(dataset.records, power, dcfg["modality_weights"])
    sampler = EpochSampler(len(dataset), int(dcfg["epoch_size"]), seed, runtime.rank, runtime.world_size, weights)
    if len(sampler) // int(dcfg["batch_size"]) == 0:
        raise MedVAEError(f"epoch_size per process ({len(sampler)}) is smaller than batch_size ({dcfg['batch_size']})")
    run = _Run(
        cfg=cfg, runtime=runtime, out_dir=out_dir, model=model, net=_wrap(model, runtime), optimizer=optimizer,
        aux_optimizer=aux_optimizer, scheduler=scheduler,
        criterion=RateDistortionLoss(cfg["loss"]["lmbda"], cfg["loss"]["distortion"]), dataset=dataset,
        sampler=sampler, val_images=build_validation_images(dcfg) if runtime.is_main else [], writer=None, amp=amp,
    )
    if resume is not None:
        _restore(run, resume)
    if runtime.is_main:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        run.writer = SummaryWriter(str(out_dir / "tb"), purge_step=run.step + 1 if resume else None)
    return run


def _wrap(model: CompressionModel, runtime: distributed.Runtime) -> torch.nn.Module:
    """The module the steps run: the model, or its DDP wrapper when distributed."""
    if not runtime.distributed:
        return model
    # Quantiles get gradients only from the aux loss; CDF buffers are identical on all ranks.
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(_aux_parameter_names(model)))
    return DistributedDataParallel(
        model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None, broadcast_buffers=False
    )


def _restore(run: _Run, path: Path) -> None:
    """Model, optimizers, scheduler, step, best loss and this rank's RNG state from a checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    run.model.load_state_dict(state["state_dict"])
    run.model.to(run.runtime.device)
    run.optimizer.load_state_dict(state["optimizer"])
    run.aux_optimizer.load_state_dict(state["aux_optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.best_val = int(state["step"]), float(state["best_val_loss"])
    rank = run.runtime.rank
    run.pending_rng = state["rng"][rank] if rank < len(state["rng"]) else None


def _checkpoint(run: _Run, path: Path) -> None:
    """Everything a resumed run needs, and the exact plan calibrated on the validation slices."""
    save_model(
        run.model,
        path,
        calibration=[item.pixels for item in run.val_images],
        optimizer=run.optimizer.state_dict(),
        aux_optimizer=run.aux_optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
        step=run.step,
        best_val_loss=run.best_val,
        config=run.cfg,
        rng=[_rng_state()],  # rank 0's state; other ranks' streams are re-derived from the seed
    )


def _loader(run: _Run, epoch: int) -> DataLoader:
    """This epoch's batches, in an order fixed by the seed, the epoch and the rank."""
    run.sampler.set_epoch(epoch)
    seed = int(run.cfg["train"]["seed"])
    return DataLoader(
        run.dataset,
        batch_size=run.batch_size,
        sampler=run.sampler,
        num_workers=int(run.cfg["data"]["workers"]),
        drop_last=True,
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1009 + run.runtime.rank),
        pin_memory=run.runtime.device.type == "cuda",
    )


def _batches(run: _Run):
    """The batches still to train on, epoch after epoch, from where the run stands."""
    steps_per_epoch = len(run.sampler) // run.batch_size
    while run.step < run.iterations:
        epoch, skip = divmod(run.step, steps_per_epoch)
        for i, batch in enumerate(_loader(run, epoch)):
            if i < skip:
                continue  # resumed mid-epoch: these batches were trained on before the stop
            yield batch
            if run.step >= run.iterations:
                return


def _validate(run: _Run, at_end: bool, progress: tqdm) -> None:
    """Validation loss and images to TensorBoard; ``best.pt`` when the loss improves."""
    tcfg = run.cfg["train"]
    val, preview = validate(run.model, run.val_images, run.criterion, run.runtime.device)
    run.model.train()
    for k, v in val.items():
        run.writer.add_scalar(f"val/{k}", v, run.step)
    if preview is not None and (run.step % int(tcfg["image_interval"]) == 0 or at_end):
        run.writer.add_image("val/original|decoded|error", preview[None], run.step)
    if val and val["loss"] < run.best_val:
        run.best_val = val["loss"]
        _checkpoint(run, run.out_dir / "best.pt")
    if val:
        progress.write(
            f"step {run.step}: val loss {val['loss']:.4f} bpp {val['bpp']:.3f} "
            f"PSNR {val['psnr']:.2f} dB MS-SSIM {val['ms_ssim']:.4f}"
        )


class _TimeBudget:
    """Fits a run's training loop into ``train.minutes`` of wall time (setup not counted), for
    machines lent for a fixed time.

    After ``MEASURE`` steps past a warm-up it measures the speed, cuts ``train.iterations``
    to the steps that fit (never raises it; :func:`medvae.training.budget.steps_that_fit`),
    rebuilds the learning-rate schedule for the new count from the base rate, so its decay
    still happens, and rewrites ``config.yaml`` so a resumed run keeps the new count. Should
    the loop still reach the deadline (validations, epoch reloads), it stops at that step.
    The main process decides and every process of a distributed run follows it, so all ranks
    stop at the same step.
    """

    WARMUP, MEASURE = 10, 50

    def __init__(self, run: _Run, minutes: Any):
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise MedVAEError(f"train.minutes must be a positive number of minutes (or null), not {minutes!r}")
        self.start, self.seconds, self.first = time.perf_counter(), 60.0 * float(minutes), run.step
        self.warm_at: float | None = None

    def update(self, run: _Run, progress: tqdm) -> None:
        done, elapsed = run.step - self.first, time.perf_counter() - self.start
        if done == self.WARMUP:
            self.warm_at = time.perf_counter()
        if done == self.WARMUP + self.MEASURE:
            rate = self.MEASURE / (time.perf_counter() - self.warm_at)
            self._cut(run, progress, steps_that_fit(run.step, elapsed, rate, self.seconds), f"{rate:.2f} steps/s fit")
        elif done > self.WARMUP + self.MEASURE and done % self.WARMUP == 0:  # every 10 steps
            self._cut(run, progress, run.step if elapsed > self.seconds else run.iterations, "the deadline stops at")

    def _cut(self, run: _Run, progress: tqdm, iterations: int, why: str) -> None:
        fits = [min(run.iterations, iterations)]
        if run.runtime.distributed:
            torch.distributed.broadcast_object_list(fits, src=0)
        if fits[0] >= run.iterations:
            return
        run.cfg["train"]["iterations"] = fits[0]
        for group in run.optimizer.param_groups:  # the schedule is replayed from the base rate
            group["lr"] = group["initial_lr"]
        run.scheduler = make_scheduler(run.optimizer, run.cfg["optim"], fits[0])
        for _ in range(run.step):
            run.scheduler.step()
        progress.total = fits[0]
        if run.runtime.is_main:
            (run.out_dir / "config.yaml").write_text(yaml.safe_dump(run.cfg, sort_keys=False))
            progress.write(f"medvae train: {why} {fits[0]} iterations (train.minutes={self.seconds / 60:g})")


class _TrainLog:
    """Running means of the step values, written to TensorBoard every ``log_interval`` steps."""

    def __init__(self, run: _Run):
        self.run, self.sums, self.start, self.steps = run, {}, time.perf_counter(), 0

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        run = self.run
        if run.writer is None or run.step % int(run.cfg["train"]["log_interval"]):
            return
        elapsed = time.perf_counter() - self.start
        for k, v in self.sums.items():
            run.writer.add_scalar(f"train/{k}", v / self.steps, run.step)
        run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], run.step)
        images = self.steps * run.batch_size * run.runtime.world_size
        run.writer.add_scalar("train/images_per_sec", images / elapsed, run.step)
        self.sums, self.start, self.steps = {}, time.perf_counter(), 0


def _train(cfg: dict[str, Any], runtime: distributed.Runtime, resume: str | Path | None, amp: bool) -> Path:
    """Set up (or resume) the run, then step, log, validate and checkpoint until the last iteration."""
    run = _setup(cfg, runtime, resume, amp)
    tcfg, clip = cfg["train"], float(cfg["optim"]["clip_grad"] or 0)
    progress = tqdm(
        total=run.iterations,
        initial=run.step,
        disable=not runtime.is_main,
        dynamic_ncols=True,
        desc="train",
        mininterval=0.5 if sys.stderr.isatty() else 60.0,  # a log file gets a line a minute, not a flood
    )
    log = _TrainLog(run)
    budget = _TimeBudget(run, tcfg["minutes"]) if tcfg["minutes"] is not None else None
    run.net.train()
    for batch in _batches(run):
        if run.pending_rng is not None:
            _set_rng_state(run.pending_rng)
            run.pending_rng = None
        x = batch.to(runtime.device, non_blocking=True)
        values = train_step(run.net, run.model, x, run.criterion, run.optimizer, run.aux_optimizer, clip, run.amp)
        run.scheduler.step()
        run.step += 1
        progress.update(1)
        if budget is not None:
            budget.update(run, progress)
        progress.set_postfix(loss=f"{values['loss']:.4g}", bpp=f"{values['bpp']:.3f}", refresh=False)
        if not all(math.isfinite(v) for v in values.values()):
            raise MedVAEError(f"non-finite loss at step {run.step}: {values}")
        log.add(values)
        at_end = run.step >= run.iterations
        if runtime.is_main and (run.step % int(tcfg["val_interval"]) == 0 or at_end):
            _validate(run, at_end, progress)
        if runtime.is_main and (run.step % int(tcfg["checkpoint_interval"]) == 0 or at_end):
            _checkpoint(run, run.out_dir / "last.pt")
            run.writer.flush()
    progress.close()
    if run.writer is not None:
        if not (run.out_dir / "best.pt").exists():
            _checkpoint(run, run.out_dir / "best.pt")  # no validation data: the last weights are the best we know
        run.writer.close()
    distributed.barrier(runtime)
    return run.out_dir
