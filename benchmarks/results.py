#!/usr/bin/env python
"""Write ``benchmarks/RESULTS.md``: the rate–distortion benchmark of the default models.

Codes the corpus ``test`` split (CT and MR apart, native bit depth) with the shipped
``medvae`` weights, the equal-budget ablation checkpoints (``bls2017``, ``balle2018``,
``bls-residual``, ``medvae``) and the classical codecs, all through
:func:`medvae.evaluation.run.evaluate` (real bytes, the same metrics as ``evaluate.py``),
then writes the tables, BD-rates, plots, coding times and training times.

    python benchmarks/results.py                 # evaluate and write the report (~15 min, 2 cores)
    python benchmarks/results.py --code          # rewrite the report from the saved results
    python benchmarks/results.py --code shipped  # code the shipped weights again, reuse the rest

The summaries (means per rate point) and training times go to ``--work`` (default
``benchmarks/results/raw``, committed), so a later checkout without the training runs can
recode one part and still write the whole report; per-image CSVs lie beside them (not
committed). The report and its plots go to ``benchmarks/``; the analysis text is
``benchmarks/results_notes.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medvae.errors import InputError  # noqa: E402
from medvae.evaluation import codecs as registry  # noqa: E402
from medvae.evaluation.bdrate import bd_rate_summary, curve  # noqa: E402
from medvae.evaluation.datasets import load_images  # noqa: E402
from medvae.evaluation.learned import Learned  # noqa: E402
from medvae.evaluation.plots import rd_plot  # noqa: E402
from medvae.evaluation.run import (  # noqa: E402
    evaluate,
    merge_summaries,
    read_summary,
    run_metadata,
    table,
    write_csv,
    write_summary,
)
from medvae.refine import DEFAULT_STEPS  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from sections import saved_blocks  # noqa: E402

FAMILIES = ("bls2017", "balle2018", "bls-residual", "medvae")
SHIPPED = "medvae (shipped)"
REFINED = "medvae (shipped, refined)"  # the same weights, latents refined at encoding (medvae.refine)
ANCHOR = "jpeg2000"
CLASSICAL = "jpeg2000,jpegxl,jpegls,jpeg"
MODALITIES = ("CT", "MR")
BD_METHOD = "pchip"  # the ablation curves have 3 points; the cubic fit needs 4
TARGETS = {"shipped_vs_j2k": -10.0, "shipped_vs_j2k_aim": -35.0, "medvae_vs_balle2018": 0.0}
MIN_OVERLAP_DB = 1.0  # a BD-rate over a narrower shared quality range is reported, but not trusted


def _lmbda(run: str) -> float:
    """λ from a run folder name such as ``medvae-l0.3``."""
    match = re.search(r"-l([0-9.]+)$", run)
    return float(match.group(1)) if match else math.nan


def shipped_points(refine_steps: int = 0) -> list[Learned]:
    """The shipped medvae qualities, q1 first; with ``refine_steps``, encoding refines the latents."""
    import medvae
    from medvae import zoo

    name = REFINED if refine_steps else SHIPPED
    return [Learned(medvae.load("medvae", quality=q), name, f"q{q}", refine_steps=refine_steps)
            for q in zoo.qualities("medvae")]


def ablation_points(ablation: Path) -> list[Learned]:
    """Each ablation family's checkpoints in λ order."""
    import medvae

    points = []
    for family in FAMILIES:
        for path in sorted(ablation.glob(f"{family}-l*/best.pt"), key=lambda p: _lmbda(p.parent.name)):
            points.append(Learned(medvae.load(path), family, f"λ={_lmbda(path.parent.name):g}"))
    if not points:
        raise InputError(f"no ablation runs under {ablation} (benchmarks/train_ablation.sh makes them)")
    return points


PARTS = ("classical", "shipped", "refined", "ablation")


def evaluate_modality(modality: str, args: argparse.Namespace) -> dict[str, Any]:
    """Classical codecs, shipped weights and ablation on the test slices of ``modality``,
    saved apart so that ``--code`` can redo one part (the classical curves do not change
    when models do, and the ablation runs need not be on this machine)."""
    images = load_images([args.manifest], "test", modality=modality)
    meta = run_metadata(split="test", modality=modality, images=[f"{im.file}#{im.index}" for im in images])
    meta["patients"] = sorted({im.patient for im in images})
    parts = []
    for part in PARTS:
        saved = args.work / modality.lower() / f"{part}.json"
        if part not in args.code:
            if saved.is_file():
                parts.append(read_summary(saved))
            else:
                print(f"{modality}: no saved {part} results ({saved}); the report leaves them out")
            continue
        points = {"classical": lambda: registry.expand(CLASSICAL), "shipped": shipped_points,
                  "refined": lambda: shipped_points(DEFAULT_STEPS), "ablation": lambda: ablation_points(args.ablation)}[part]()
        part_meta = {**meta, "refine_steps": DEFAULT_STEPS, "refine_threads": torch.get_num_threads()} if part == "refined" else meta
        result = evaluate(images, points, meta=part_meta)
        write_csv(result.rows, saved.with_suffix(".csv"))
        write_summary(result.summary, saved)
        parts.append(result.summary)
    merged = merge_summaries(parts)
    for summary in parts:  # how the refined points were coded, for the report's text
        if "refine_steps" in summary["meta"]:
            merged["meta"]["refine"] = {k: summary["meta"][k] for k in ("refine_steps", "refine_threads")}
    return merged


# ----------------------------------------------------------------------------- report pieces


def _monotone(summary: dict[str, Any], name: str, metric: str) -> bool:
    """Does quality rise with rate along the codec's points?"""
    rate, quality = curve(summary, name, metric)
    ordered = [q for _, q in sorted(zip(rate, quality))]
    return all(b >= a for a, b in zip(ordered, ordered[1:]))


def _overlap(summary: dict[str, Any], a: str, b: str, metric: str) -> float:
    """Width of the quality range two curves share (dB); BD-rate averages over it."""
    qa, qb = curve(summary, a, metric)[1], curve(summary, b, metric)[1]
    if not qa or not qb:
        return 0.0
    return max(0.0, min(max(qa), max(qb)) - max(min(qa), min(qb)))


def trust(summary: dict[str, Any], anchor: str, test: str, metric: str) -> str:
    """Why a BD-rate between these curves should not be trusted ("" when it can be)."""
    problems = [f"{n} is not monotone" for n in (anchor, test) if not _monotone(summary, n, metric)]
    width = _overlap(summary, anchor, test, metric)
    if width < MIN_OVERLAP_DB:
        problems.append(f"the curves share only {width:.2f} dB")
    return "; ".join(problems)


def _bd(summary: dict[str, Any], anchor: str, test: str, metric: str) -> float | str:
    try:
        return bd_rate_summary(summary, anchor, test, metric, BD_METHOD)
    except InputError as exc:
        return str(exc).split(": ")[-1]


def _fmt(value: Any, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return f"n/a ({value})"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _pct(value: float | str) -> str:
    return _fmt(value) if isinstance(value, str) else f"{value:+.2f} %"


def _refine_text(summary: dict[str, Any]) -> str:
    """How the refined points were coded, from their saved metadata."""
    refine = summary["meta"].get("refine", {})
    steps, threads = refine.get("refine_steps", "?"), refine.get("refine_threads", "?")
    return f"{steps} steps, {_count(threads, 'thread') if isinstance(threads, int) else '? threads'}"


def bd_section(summary: dict[str, Any]) -> list[str]:
    names = [n for n in summary["codecs"] if n != ANCHOR]
    lines = [
        f"BD-rate against {ANCHOR} ({BD_METHOD}; negative = fewer bits for the same quality):",
        "",
        "| codec | BD-rate PSNR (%) | BD-rate MS-SSIM dB (%) | caveat (PSNR) |",
        "|---|---|---|---|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {_fmt(_bd(summary, ANCHOR, name, 'psnr'), sign=True)} "
            f"| {_fmt(_bd(summary, ANCHOR, name, 'ms_ssim_db'), sign=True)} | {trust(summary, ANCHOR, name, 'psnr') or '–'} |"
        )
    if SHIPPED in summary["codecs"] and REFINED in summary["codecs"]:
        lines += ["", f"Encoder-side refinement ({_refine_text(summary)}, same weights and decoder): "
                  f"{REFINED} vs {SHIPPED}: BD-rate PSNR {_pct(_bd(summary, SHIPPED, REFINED, 'psnr'))}, "
                  f"MS-SSIM dB {_pct(_bd(summary, SHIPPED, REFINED, 'ms_ssim_db'))}."]
    pairs = [("balle2018", "medvae"), ("bls2017", "bls-residual")]
    if all(n in summary["codecs"] for pair in pairs for n in pair):
        lines += ["", "Equal-budget ablation (the residual path on and off):", "",
                  "| test vs anchor | BD-rate PSNR | BD-rate MS-SSIM dB | caveat (PSNR) |", "|---|---|---|---|"]
        for anchor, test in pairs:
            lines.append(
                f"| {test} vs {anchor} | {_pct(_bd(summary, anchor, test, 'psnr'))} "
                f"| {_pct(_bd(summary, anchor, test, 'ms_ssim_db'))} | {trust(summary, anchor, test, 'psnr') or '–'} |"
            )
    return lines


def rd_table(summary: dict[str, Any]) -> list[str]:
    ct = summary["meta"].get("modality") == "CT"
    metrics = ["bpp", "psnr", "ms_ssim"] + (["psnr_soft_tissue"] if ct else []) + ["max_abs_error", "encode_s", "decode_s"]
    return table(summary, metrics).splitlines()


def timing_section(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| codec | encode s/slice | decode s/slice |",
        "|---|---|---|",
    ]
    for name, fam in summary["codecs"].items():
        lossy = [p for p in fam["points"] if not p["lossless"] and p["encode_s"] is not None]
        if lossy:
            enc = sum(p["encode_s"] for p in lossy) / len(lossy)
            dec = sum(p["decode_s"] for p in lossy) / len(lossy)
            lines.append(f"| {name} | {enc:.3f} | {dec:.3f} |")
    return lines


def training_seconds(run_dir: Path, max_gap: float = 300.0) -> tuple[float, str] | None:
    """(seconds spent training, steps logged) from a run's TensorBoard log; pauses between
    sessions (gaps over ``max_gap`` s between logged steps) are not counted. The steps are
    the last one, or "first–last" when the log does not start at the beginning."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        return None
    # Keep every event: a run resumed from an earlier checkpoint logs some steps twice, and
    # TensorBoard's default purge would drop the first session's time.
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    acc.Reload()
    if "train/loss" not in acc.Tags().get("scalars", []):
        return None
    events = sorted(acc.Scalars("train/loss"), key=lambda e: e.wall_time)
    times = [e.wall_time for e in events]
    seconds = sum(b - a for a, b in zip(times, times[1:]) if 0 < b - a < max_gap)
    first, last = min(e.step for e in events), max(e.step for e in events)
    return seconds, (f"{first}–{last}" if first > 1000 else str(last))


def shipped_run_names() -> set[str]:
    """Run folders the shipped weights came from, read from the commands in their index."""
    from medvae import zoo

    commands = [e.get("command", "") for e in zoo.index().get("medvae", {}).get("qualities", {}).values()]
    return {Path(m).name for c in commands for m in re.findall(r"train\.out_dir=(\S+)", c)}


def training_times(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of (model, run, steps, hours): measured from the runs on this machine, else as last
    saved in ``--work``/training.json, so the report keeps the times of runs trained in an
    earlier session. A run is named by its model and folder (the ablation's ``medvae-l0.3``
    is not the shipped ladder's)."""
    saved_path = args.work / "training.json"
    rows = json.loads(saved_path.read_text()) if saved_path.is_file() else []
    times = {(r["model"], r["run"]): r for r in rows}
    found = [(family, run) for family in FAMILIES for run in args.ablation.glob(f"{family}-l*")]
    found += [(SHIPPED, run) for run in [*args.base_runs, *args.shipped_runs.glob("medvae-*")]]
    for model, run in found:
        got = training_seconds(run)
        if got:
            times[model, run.name] = {"model": model, "run": run.name, "steps": got[1], "hours": round(got[0] / 3600, 3)}
    rows = sorted(times.values(), key=lambda r: (r["model"], r["run"]))
    saved_path.parent.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _first_step(row: dict[str, Any]) -> int:
    return int(str(row["steps"]).split("–")[0]) if "–" in str(row["steps"]) else 0


def training_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | run | steps | training time (h) |", "|---|---|---|---|"]
    for family in FAMILIES:
        runs = sorted((r for r in rows if r["model"] == family), key=lambda r: _lmbda(r["run"]))
        for r in runs:
            lines.append(f"| {family} | {r['run']} | {r['steps']} | {r['hours']:.2f} |")
        if runs:
            lines.append(f"| **{family}** | **all λ** | | **{sum(r['hours'] for r in runs):.2f}** |")
    shipped = shipped_run_names()
    base = sorted((r for r in rows if r["model"] == SHIPPED and r["run"].startswith(("corpus-", "base"))),
                  key=lambda r: (r["run"].startswith("base"), _first_step(r)))  # the continuation last
    ladder = sorted((r for r in rows if r["model"] == SHIPPED and r["run"] in shipped and r not in base),
                    key=lambda r: (re.search(r"-M(\d+)-", r["run"]) is not None, _lmbda(r["run"])))
    for r in base + ladder:
        lines.append(f"| {SHIPPED} | {r['run']} | {r['steps']} | {r['hours']:.2f} |")
    return lines


#: Where the report's later sections (written by other benchmarks) measure the current targets.
CURRENT_TARGETS = (
    "The current targets, lossless and near-lossless coding and the variable-rate default `medvae-ctx` "
    "with rate control, are measured in their own sections below: \"Lossless and near-lossless\", "
    "\"The context model `medvae-ctx`\", \"Variable rate against separate models at an equal training "
    "budget\" and \"Optimized near-lossless coding\" (rate control's files above the lossy reach). This table is "
    "the first release's, for the `medvae` ladder."
)


def targets_section(ct: dict[str, Any]) -> list[str]:
    goal_text = f"≤ {TARGETS['shipped_vs_j2k']:+.0f} % (aim {TARGETS['shipped_vs_j2k_aim']:+.0f} %)"
    rows = [("shipped medvae vs JPEG 2000, BD-rate PSNR", TARGETS["shipped_vs_j2k"], goal_text, _bd(ct, ANCHOR, SHIPPED, "psnr"))]
    if REFINED in ct["codecs"]:
        rows.append((f"shipped medvae, encoder refinement ({_refine_text(ct)}), vs JPEG 2000, BD-rate PSNR",
                     TARGETS["shipped_vs_j2k"], goal_text, _bd(ct, ANCHOR, REFINED, "psnr")))
    rows.append(("medvae vs balle2018 at equal budget, BD-rate PSNR", TARGETS["medvae_vs_balle2018"], "< 0 %",
                 _bd(ct, "balle2018", "medvae", "psnr")))
    lines = ["| target | goal | measured (CT test) | met |", "|---|---|---|---|"]
    for name, goal, label, value in rows:
        met = "n/a" if isinstance(value, str) else ("yes" if value <= goal else f"no, by {value - goal:.1f} points")
        if "balle2018" in name and trust(ct, "balle2018", "medvae", "psnr"):
            met += f" on paper, but not resolved ({trust(ct, 'balle2018', 'medvae', 'psnr')})"
        lines.append(f"| {name} | {label} | {_pct(value)} | {met} |")
    return lines


def write_report(summaries: dict[str, dict[str, Any]], args: argparse.Namespace) -> Path:
    out = args.out
    plots = out / "results"
    plots.mkdir(parents=True, exist_ok=True)
    notes = (out / "results_notes.md").read_text() if (out / "results_notes.md").is_file() else ""
    lines = [
        "# MedVAE benchmark: corpus test split",
        "",
        f"Generated by `python benchmarks/results.py` on {dt.date.today().isoformat()}. "
        "Rates are real bytes (`.mvae` container with header and CRC for the learned codecs); "
        "PSNR at each image's native bit depth (peak 2^bits − 1); MS-SSIM on the same range. "
        f"BD-rates use {BD_METHOD} interpolation (the ablation curves have 3 points). "
        "Learned codecs run on 1 CPU thread (encoder-side refinement: see its note); times are per slice on this machine.",
        "",
    ]
    ct = summaries.get("CT")
    if ct:
        lines += ["## Targets of the first release (the `medvae` ladder)", "", CURRENT_TARGETS, "", *targets_section(ct), ""]
    if notes:
        lines += [notes.strip(), ""]
    for modality, summary in summaries.items():
        meta = summary["meta"]
        stem = modality.lower()
        have = list(summary["codecs"])
        views = {
            "rd": [n for n in have if n not in FAMILIES],  # shipped medvae and the classical codecs
            "ablation": [n for n in have if n in FAMILIES],  # equal budget, zoomed in (JPEG 2000 is far above)
        }
        for view, names in views.items():
            for metric in ("psnr", "ms_ssim_db"):
                rd_plot(summary, metric, plots / f"{stem}_{view}_{metric}", codecs=names, max_bpp=args.max_bpp,
                        title=f"{modality} test split ({meta['n_images']} slices): {'shipped' if view == 'rd' else 'ablation'}")
        lines += [
            f"## {modality}: {_count(meta['n_images'], 'slice')} from {_count(len(meta.get('patients', [])), 'patient')} "
            f"({', '.join(meta.get('patients', []))})",
            "",
            f"![{modality} PSNR](results/{stem}_rd_psnr.png) ![{modality} MS-SSIM](results/{stem}_rd_ms_ssim_db.png)",
            "",
            f"![{modality} ablation PSNR](results/{stem}_ablation_psnr.png) "
            f"![{modality} ablation MS-SSIM](results/{stem}_ablation_ms_ssim_db.png)",
            "",
            *bd_section(summary),
            "",
            "<details><summary>Every rate point</summary>",
            "",
            *rd_table(summary),
            "",
            "</details>",
            "",
        ]
    if ct:
        lines += ["## Coding time per slice (CT test, 512×512)", "", *timing_section(ct), ""]
    for section in saved_blocks(plots.parent):  # written by lossless.py and series.py, kept between their markers
        lines += [section, ""]
    lines += [
        "## Training time",
        "",
        "Wall time from each run's TensorBoard log (pauses between sessions not counted).",
        "",
        *training_section(training_times(args)),
        "",
    ]
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/corpus/MANIFEST.csv")
    parser.add_argument("--ablation", type=Path, default=REPO / "runs/ablation", help="folder of <family>-l<λ>/best.pt runs")
    parser.add_argument("--shipped-runs", type=Path, default=REPO / "runs/shipped", help="fine-tune runs of the shipped weights")
    parser.add_argument("--base-runs", type=Path, nargs="*", help="base runs of the shipped weights",
                        default=[REPO / "training-state/corpus-cpu-medvae-l0.3", REPO / "training-state/base2-l1.2"])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks/results/raw", help="summaries, training times and per-image rows")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--modality", action="append", choices=MODALITIES, help="default: CT and MR")
    parser.add_argument("--max-bpp", type=float, default=3.0, help="x range of the plots")
    parser.add_argument(
        "--code", nargs="*", choices=PARTS, default=list(PARTS),
        help="parts to code now; the others come from the saved results (none: just rewrite the report)",
    )
    args = parser.parse_args(argv)

    summaries = {modality: evaluate_modality(modality, args) for modality in args.modality or MODALITIES}
    print(f"wrote {write_report(summaries, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
