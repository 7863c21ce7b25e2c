"""Training of the residual model on (image, base reconstruction) pairs.

The base layer is frozen: each training slice is coded once with it (exactly, as the coder
will), and the residual model learns the cost of the residuals left
(:func:`medvae.residual.model.residual_bits`) on random crops. bfloat16 autocast on the CPU
is an option, but for this small network it measured 10× slower than float32 here.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medvae.allocator import keep_freed_memory
from medvae.checkpoint import fingerprint as weights_fingerprint
from medvae.codec import Codec
from medvae.errors import MedVAEError
from medvae.evaluation.datasets import group_series
from medvae.io.files import atomic_path
from medvae.io.slices import Slice
from medvae.prediction import UNIT_STEP
from medvae.residual.model import ResidualModel, previous_tensor, residual_bits, slice_tensors
from medvae.residual.tables import LAWS
from medvae.series import previous_planes
from medvae.training.budget import steps_that_fit


@dataclass
class Pair:
    """One training slice: the stored integers, the base layer's reconstruction, its mapping,
    and for a series model the previous slices of its series ((H, W) for one, (n, H, W) for
    n, nearest first)."""

    image: np.ndarray
    base: np.ndarray
    value_range: tuple[int, int]
    previous: np.ndarray | None = None

    def __iter__(self):
        """(image, base, value_range, previous): what :func:`medvae.residual.weights.calibrate_residual` takes."""
        return iter((self.image, self.base, self.value_range, self.previous))


def base_pairs(
    codec: Codec, slices: list[Slice], progress: bool = True, base_step: int = UNIT_STEP, noise_step: bool = False,
) -> list[Pair]:
    """Each slice with what the base layer ``codec`` reconstructs from it, its latent y quantized
    with ``base_step`` (in quarters: a series slice's, :func:`medvae.prediction.base_step`), or with
    ``noise_step`` the coarser of it and the step the slice's noise calls for
    (:func:`medvae.prediction.noise_step`: what a slice coded alone gets)."""
    pairs = []
    for s in tqdm(slices, desc="base layer", unit="slice", disable=not progress):
        # the loss gives pixels outside the range no bits, as the coder does
        base, value_range, _ = codec.base_layer(s.pixels, base_step=base_step, noise_step=noise_step)
        pairs.append(Pair(s.pixels, base, value_range))
    return pairs


def previous_count(pair: Pair) -> int:
    """How many previous slices ``pair`` holds (0 for a slice alone)."""
    return 0 if pair.previous is None else 1 if pair.previous.ndim == 2 else len(pair.previous)


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``arrays`` (``np.array`` would stack same-shaped ones)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def series_pairs(pairs: list[Pair], slices: list[Slice], count: int = 1) -> list[Pair]:
    """The pairs (one per slice of ``slices``) whose slice follows another of its series, each
    with the ``count`` slices before it as ``previous`` (nearest first; the second slice of a
    series has one, given twice, as the coder gives it: :func:`medvae.series.previous_planes`):
    what a series model trains on. Series as the evaluation finds them
    (:func:`medvae.evaluation.datasets.group_series`: a volume's slices, or one DICOM series'
    files, in anatomical order)."""
    out = []
    for group in group_series(slices):
        for at in range(1, len(group)):
            before = [slices[j].pixels for j in reversed(group[max(0, at - count) : at])]
            previous = before[0] if count == 1 else previous_planes(before, count)
            out.append(Pair(pairs[group[at]].image, pairs[group[at]].base, pairs[group[at]].value_range, previous))
    return out


def save_pairs(pairs: list[Pair], path: str | Path) -> None:
    previous = {"previous": _objects([p.previous for p in pairs])} if pairs and pairs[0].previous is not None else {}
    np.savez_compressed(
        path, images=_objects([p.image for p in pairs]), bases=_objects([p.base for p in pairs]),
        ranges=np.array([p.value_range for p in pairs]), **previous,
    )


def load_pairs(path: str | Path) -> list[Pair]:
    data = np.load(path, allow_pickle=True)
    previous = data["previous"] if "previous" in data else [None] * len(data["images"])
    return [Pair(i, b, tuple(int(v) for v in r), p) for i, b, r, p in zip(data["images"], data["bases"], data["ranges"], previous)]


def _batch(pairs: list[Pair], rng: np.random.Generator, size: int, crop: int) -> tuple[torch.Tensor | None, ...]:
    """Random crops: (image, base, lo, hi, previous), previous None unless the pairs have it."""
    images, bases, previous, los, his = [], [], [], [], []
    for k in rng.integers(0, len(pairs), size):
        p = pairs[k]
        h, w = p.image.shape
        c = min(crop, h, w) // 2 * 2  # whole 2×2 blocks
        r0, c0 = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        window = (slice(r0, r0 + c), slice(c0, c0 + c))
        images.append(p.image[window].astype(np.float32))
        bases.append(p.base[window].astype(np.float32))
        if p.previous is not None:
            previous.append(p.previous.reshape(-1, h, w)[:, window[0], window[1]].astype(np.float32))
        los.append(p.value_range[0])
        his.append(p.value_range[1])
    c = min(x.shape[0] for x in images)
    stack = lambda xs: torch.from_numpy(np.stack([x[..., :c, :c] for x in xs])).reshape(len(xs), -1, c, c)  # noqa: E731
    bound = lambda v: torch.tensor(v, dtype=torch.float32).reshape(-1, 1, 1, 1)  # noqa: E731
    return stack(images), stack(bases), bound(los), bound(his), stack(previous) if previous else None


def evaluate_bpp(model: ResidualModel, pairs: list[Pair], max_error: int = 0, law: str = "laplace") -> float:
    """Mean residual bits per pixel over whole slices (float model, escapes included) with
    error bound ``max_error`` under the ``law`` family's tables, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    bits, pixels = 0.0, 0
    with torch.no_grad():
        for p in pairs:
            image, base, lo, hi = (t.to(device) for t in slice_tensors(p.image, p.base, p.value_range))
            previous = None if p.previous is None else previous_tensor(p.previous, image.shape[-2:]).to(device)
            bits += float(residual_bits(model, image, base, lo, hi, previous, max_error, law).sum())
            pixels += image.numel()
    model.train()
    return bits / pixels


def train_residual(
    pairs: list[Pair], *, steps: int, batch: int = 16, crop: int = 96, lr: float = 1e-3, bf16: bool = False,
    seed: int = 0, model: ResidualModel | None = None, val: list[Pair] | None = None, log_every: int = 500,
    checkpoint: str | Path | None = None, device: str | torch.device = "cpu", minutes: float | None = None,
    max_errors: tuple[int, ...] = (0,), law: str = "laplace",
) -> tuple[ResidualModel, list[dict]]:
    """Adam on the mean residual bits per pixel; the learning rate falls tenfold for the last
    fifth. Returns the model (on the CPU) and a log (step, train bpp, validation bpp, seconds).
    ``max_errors``: each crop is coded with one of these error bounds, drawn at random, its later
    passes reading the residuals as the decoder has them; anything but lossless alone needs a
    model that reads the bounds (:func:`medvae.residual.model.with_bounds`). Validation is lossless.
    ``law``: the family of laws the loss codes under (:data:`medvae.residual.tables.LAWS`; "mixed":
    the law the encoder of formats 15 to 17 picks for nearly every pass).

    With ``checkpoint``, the whole training state (model, optimizer, schedule, random
    generators, log) is written there every ``log_every`` steps, and a run started with an
    existing checkpoint continues from it: an interrupted run ends with the model an
    uninterrupted one would have given. ``device`` runs the model there (``bf16`` autocasts on
    it). ``minutes`` fits the run into that wall time: after :data:`TIMED_STEPS` steps the speed
    measured sets the step count (at most ``steps``, 10 % spare), and the learning rate then
    falls for the last fifth of that count; it cannot be combined with ``checkpoint``."""
    if minutes is not None and (checkpoint or not minutes > 0):
        raise MedVAEError("minutes must be a positive number of minutes, and cannot be combined with a checkpoint")
    device = torch.device(device)
    keep_freed_memory()  # each step's buffers reused, not page-faulted again (medvae.allocator)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model or ResidualModel()
    if any(previous_count(p) != model.previous for p in pairs):
        raise MedVAEError(f"a residual model reading {model.previous} previous slice(s) of a series trains on pairs with as many")
    if law not in LAWS:
        raise MedVAEError(f"law must be one of {', '.join(LAWS)}, not {law!r}")
    if not max_errors or min(max_errors) < 0:
        raise MedVAEError(f"max_errors must be error bounds of 0 or more, not {max_errors}")
    if tuple(max_errors) != (0,) and not model.bounds:
        raise MedVAEError("near-lossless training needs a model that reads the error bounds (with_bounds)")
    model = model.to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(steps * 0.8)], 0.1)
    log, start, running, done = [], time.time(), [], 0
    settings = {"steps": steps, "channels": model.channels, "blocks": model.blocks, "previous": model.previous, "batch": batch, "crop": crop, "lr": lr, "bf16": bf16,
                "seed": seed, **({"max_errors": list(max_errors)} if model.bounds else {}), **({"law": law} if law != "laplace" else {}), "train_slices": len(pairs), "start": weights_fingerprint(model)}  # which model it started from (--init)
    if checkpoint and Path(checkpoint).exists():
        done, log = _restore(checkpoint, model, optimizer, scheduler, rng, settings)
        start -= log[-1]["seconds"] if log else 0.0
    bar = tqdm(total=steps, initial=done, desc="residual model", unit="step")
    step = done
    while step < steps:
        step += 1
        bar.update()
        if minutes is not None and step == TIMED_STEPS + 1:
            steps = _fitted_steps(steps, step - 1, time.time() - start, minutes)
            scheduler.milestones = Counter([int(steps * 0.8)])
            bar.total = steps
        image, base, lo, hi, previous = (None if t is None else t.to(device, non_blocking=True) for t in _batch(pairs, rng, batch, crop))
        tau = max_errors[0] if len(max_errors) == 1 else torch.tensor(rng.choice(max_errors, image.shape[0]), dtype=image.dtype, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            bits = residual_bits(model, image, base, lo, hi, previous, tau, law)
        loss = bits.sum() / image[0, 0].numel() / image.shape[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "train_bpp": float(np.mean(running)), "seconds": round(time.time() - start, 1)}
            if val:
                entry["val_bpp"] = evaluate_bpp(model, val, law=law)
            log.append(entry)
            tqdm.write(str(entry))
            running = []
            if checkpoint:
                _save_state(checkpoint, step, settings, model, optimizer, scheduler, rng, log)
    bar.close()
    return model.cpu(), log


#: Steps timed before a run with a wall-time budget sets its step count.
TIMED_STEPS = 50


def _fitted_steps(steps: int, done: int, seconds: float, minutes: float) -> int:
    """The steps that fit ``minutes`` at the speed of the first ``done`` (:func:`steps_that_fit`),
    at least one more and at most ``steps``."""
    return max(done + 1, min(steps, steps_that_fit(done, seconds, done / max(seconds, 1e-9), 60 * minutes)))


def _save_state(path, step, settings, model, optimizer, scheduler, rng, log) -> None:
    state = {
        "step": step, "settings": settings, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
        "numpy_rng": json.dumps(rng.bit_generator.state), "log": log,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore(path, model, optimizer, scheduler, rng, settings) -> tuple[int, list[dict]]:
    """Load a training state written by :func:`_save_state` into the given objects; returns
    the steps done and the log so far. Refuses the state of another run: other steps, width,
    batch, crop, learning rate, precision, seed, number of training slices or starting model."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("settings") or {"steps": state["steps"], "channels": state["channels"]}  # states of the first release
    differ = {key: (value, settings.get(key)) for key, value in saved.items() if settings.get(key) != value}
    if differ:
        listed = ", ".join(f"{key} {was} (now {now})" for key, (was, now) in differ.items())
        raise MedVAEError(f"{path}: the training state of another run ({listed}); choose another checkpoint")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    return state["step"], state["log"]
