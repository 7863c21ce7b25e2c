#!/usr/bin/env python
"""One variable-rate model against separately trained models at an equal training budget, on two λ.

The runs of ``benchmarks/train_equal_budget.sh``: from the same start (the shipped ``medvae`` q5),
``medvae`` trained at λ 0.03 and at λ 1.2 for S steps each, and each variable-rate family
(``medvae-vr``, and ``medvae-vbr`` when its run exists) with exactly those two levels for 2·S
steps (each sample draws a level, so each λ sees as many samples). On the corpus CT and MR test
slices (real bytes, PSNR at the stored bit depth), for each variable-rate family:

* at each λ, the rate the variable-rate model needs for the separate model's PSNR (its sweep over
  qualities 1 to 2 in quarters, interpolated per image), against the separate model's rate;
  a BD-rate needs three points per curve, and each separate model is one;
* the variable-rate model at that level against the separate model: mean bpp, mean PSNR and
  mean R–D loss ``bpp + λ·255²·MSE`` (the form of the training objective).

    python benchmarks/equal_budget.py [--runs runs/equal-budget]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

import medvae
from medvae.errors import InputError
from medvae.evaluation.datasets import load_images
from medvae.evaluation.learned import Learned
from medvae.evaluation.run import evaluate, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import publish_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared/data/corpus/MANIFEST.csv"
LMBDAS = (0.03, 1.2)
VR_QUALITIES = (1.0, 1.25, 1.5, 1.75, 2.0)
#: The variable-rate families compared with the separate models, each its own run.
VR_FAMILIES = ("medvae-vr", "medvae-vbr")


def _training(run: Path) -> str:
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    return f"{state['step']} steps"


def vr_runs(runs: Path) -> list[str]:
    """The variable-rate families trained under ``runs`` (``medvae-vr`` must be)."""
    return [family for family in VR_FAMILIES if family == "medvae-vr" or (runs / family / "last.pt").exists()]


def points(runs: Path) -> list[Learned]:
    """The separate models (one point each, curve ``separate``) and each variable-rate family's
    sweep (the curve named by the family)."""
    codecs = [Learned(medvae.load(runs / f"medvae-l{lmbda}" / "last.pt"), "separate", f"l{lmbda}") for lmbda in LMBDAS]
    for family in vr_runs(runs):
        vr = medvae.load(runs / family / "last.pt")
        if tuple(vr.model.config["lmbdas"]) != LMBDAS:
            raise InputError(f"{runs}/{family} has levels {vr.model.config['lmbdas']}, expected {LMBDAS}")
        codecs += [Learned(vr, family, f"q{q:g}", quality=q) for q in VR_QUALITIES]
    return codecs


def _rd_loss(row: dict[str, Any], lmbda: float) -> float:
    """``bpp + λ·255²·MSE`` with the MSE on the image scaled to [0, 1] by its stored bit depth."""
    mse = 10 ** (-float(row["psnr"]) / 10)  # PSNR at the stored bit depth: MSE / peak²
    return float(row["bpp"]) + lmbda * 255**2 * mse


def _rows(rows: list[dict[str, Any]], codec: str, value: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r["codec"] == codec and (value is None or r["value"] == value) and not r["error"]]


def rate_at_equal_psnr(rows: list[dict[str, Any]], lmbda: float, family: str) -> tuple[float, int, int]:
    """Rate change (%) of a variable-rate ``family`` against the separate model of ``lmbda`` at that
    model's PSNR, per image (the variable-rate sweep's log-rate interpolated in PSNR, PCHIP),
    then averaged: (mean %, images used, images whose sweep does not reach that PSNR)."""
    changes, outside = [], 0
    for image in sorted({(r["file"], r["slice"]) for r in rows}):
        mine = [r for r in rows if (r["file"], r["slice"]) == image]
        (separate,) = _rows(mine, "separate", f"l{lmbda}")
        sweep = sorted((float(r["psnr"]), math.log10(float(r["bpp"]))) for r in _rows(mine, family))
        psnr = float(separate["psnr"])
        if not sweep[0][0] <= psnr <= sweep[-1][0] or len({p for p, _ in sweep}) < len(sweep):
            outside += 1
            continue
        rate = 10 ** float(PchipInterpolator(*zip(*sweep))(psnr))
        changes.append(100 * (rate / float(separate["bpp"]) - 1))
    return (float(np.mean(changes)) if changes else float("nan")), len(changes), outside


def level_lines(rows: list[dict[str, Any]], modality: str, family: str) -> list[str]:
    """Per λ: separate against the variable-rate ``family`` at that level (means over images),
    and the rate change at equal PSNR."""
    lines = []
    for level, lmbda in enumerate(LMBDAS, start=1):
        stats = {}
        for codec, value in (("separate", f"l{lmbda}"), (family, f"q{level:g}")):
            mine = _rows(rows, codec, value)
            stats[codec] = [np.mean([float(r["bpp"]) for r in mine]), np.mean([float(r["psnr"]) for r in mine]),
                            np.mean([_rd_loss(r, lmbda) for r in mine])]
        (sb, sp, sl), (vb, vp, vl) = stats["separate"], stats[family]
        change, used, outside = rate_at_equal_psnr(rows, lmbda, family)
        lines.append(f"| {modality} | `{family}` | {lmbda} | {change:+.1f} % ({used} of {used + outside}) | {sb:.3f} / {sp:.2f} / {sl:.4f} | "
                     f"{vb:.3f} / {vp:.2f} / {vl:.4f} | {100 * (vl / sl - 1):+.1f} % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=REPO / "runs/equal-budget")
    parser.add_argument("--data", type=Path, default=MANIFEST)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--precision", default="float32", help="how the runs trained, for the report (bf16: AMP=1)")
    args = parser.parse_args(argv)
    codecs = points(args.runs)
    levels, rows = [], []
    for modality in ("CT", "MR"):
        images = load_images([args.data], "test", modality=modality)
        if images:
            mine = evaluate(images, codecs, meta={"split": "test", "modality": modality}, progress=True).rows
            rows += mine
            levels += [line for family in vr_runs(args.runs) for line in level_lines(mine, modality, family)]
    write_csv(rows, args.out / "results" / "equal_budget.csv")
    budget = ", ".join(f"`{run}` {_training(args.runs / run)}" for run in ("medvae-l0.03", "medvae-l1.2", *vr_runs(args.runs)))
    lines = [
        "## Variable rate against separate models at an equal training budget (`python benchmarks/equal_budget.py`)",
        "",
        "From the same start (the shipped `medvae` q5) and recipe (`benchmarks/train_equal_budget.sh`: corpus CT+MR "
        f"train split, 128² crops, batch 8, Adam 1e-4, {args.precision}): {budget}. Each variable-rate model has the two "
        f"levels λ {LMBDAS[0]} and {LMBDAS[1]}, so each λ saw as many training samples as its separate model. "
        "`medvae-vr` is the shipped variable-rate architecture (gain units on the latent; the hyperprior reads the "
        "gained latent); `medvae-vbr` the same with a hyperprior that does not depend on the rate (it reads the latent "
        "before the gain, and its scales are multiplied by the gain; Kamisli et al. 2024). Corpus test "
        "split, real bytes, PSNR at the stored bit depth; negative = fewer bits than the separate models.",
        "",
        "At each λ: the rate change of the variable-rate model at the separate model's PSNR, per image (its sweep "
        "over qualities 1–2 in quarters, log-rate interpolated in PSNR, PCHIP), then averaged; (n of m): images whose "
        "sweep reaches that PSNR. Then means over images of bpp, PSNR and the R–D loss bpp + λ·255²·MSE (at the stored "
        "bit depth: the form of the training objective, at a different intensity scale) of the separate model and of "
        "the variable-rate model at that level.",
        "",
        "| modality | variable-rate model | λ | rate at equal PSNR | separate bpp / PSNR / loss | variable-rate at the level: bpp / PSNR / loss | loss change |",
        "|---|---|---|---|---|---|---|",
        *levels,
    ]
    return publish_section("equal_budget", lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
