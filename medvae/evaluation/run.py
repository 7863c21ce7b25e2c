"""The evaluation loop: images × rate points → per-image rows and a summary.

Every row comes from real bytes: ``encode`` then ``decode``, the decoded
integers compared with the originals by :func:`medvae.metrics.image_metrics`.
A point that cannot code an image (e.g. JPEG-LS NEAR larger than half an 8-bit
range) leaves a row with its ``error`` and is marked incomplete in the summary,
so curves never mix image subsets silently.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from medvae.errors import InputError, MedVAEError
from medvae.evaluation.codecs import ImageCodec
from medvae.io.files import publish
from medvae.io.slices import Slice
from medvae.metrics import CT_WINDOWS, image_metrics, ms_ssim_db

FORMAT = "medvae-evaluation-v1"

#: Per-image CSV columns, in order.
COLUMNS = [
    "patient", "modality", "file", "slice", "height", "width", "bits_stored",
    "codec", "point", "knob", "value", "lossless", "native_depth", "note", "error",
    "bytes", "bpp", "compression_ratio", "psnr", "psnr_soft_tissue", "psnr_lung", "psnr_bone",
    "ms_ssim", "ms_ssim_db", "max_abs_error", "mse", "exact", "encode_s", "decode_s",
]

#: Summary metrics averaged over images (windowed ones over CT images only).
MEAN_METRICS = ("bpp", "bytes", "compression_ratio", "psnr", "psnr_soft_tissue", "psnr_lung", "psnr_bone", "ms_ssim", "encode_s", "decode_s")


@dataclass
class EvalResult:
    """Rows (one dict per image × point) and the summary built from them."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    decoded: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)  # label -> (image, bpp), kept image only


def _row(point: ImageCodec, image: Slice) -> dict[str, Any]:
    """What a row says before coding: the slice and the point."""
    return {
        "patient": image.patient, "modality": image.modality, "file": image.file, "slice": image.index,
        "height": image.shape[0], "width": image.shape[1], "bits_stored": image.bits_stored,
        "codec": point.family, "point": point.label, "knob": point.knob,
        "value": "" if point.value is None else point.value, "lossless": point.lossless,
        "note": "", "error": "",
    }


def _measured(point: ImageCodec, image: Slice, row: dict[str, Any], decoded: np.ndarray, n_bytes: float, encode_s: float, decode_s: float) -> np.ndarray:
    """Fill ``row`` with the metrics of ``decoded`` against the slice; the decoded image in the slice's dtype."""
    ref = image.pixels
    decoded = np.asarray(decoded)
    if decoded.shape != ref.shape:
        raise MedVAEError(f"{point.label}: decoded shape {decoded.shape} differs from {ref.shape}")
    if decoded.dtype != ref.dtype:
        info = np.iinfo(ref.dtype)
        if decoded.size and (decoded.min() < info.min or decoded.max() > info.max):
            raise MedVAEError(f"{point.label}: decoded values do not fit {ref.dtype}")
        decoded = decoded.astype(ref.dtype)
    lo, hi = image.value_range
    metrics = image_metrics(
        ref, decoded, n_bytes, image.bits_stored, lo, hi, image.slope, image.intercept,
        CT_WINDOWS if image.modality == "CT" else {},
    )
    row.update(metrics)
    row.update(
        native_depth=point.native_depth and not row["note"],
        exact=metrics["max_abs_error"] == 0,
        encode_s=encode_s,
        decode_s=decode_s,
    )
    if point.lossless and not row["exact"]:
        raise MedVAEError(f"{point.label} claims to be lossless but changed {image.file} slice {image.index}")
    return decoded


def _coded(encode: Callable[[], bytes], decode: Callable[[bytes], np.ndarray]) -> tuple[bytes, np.ndarray, float, float] | str:
    """(bytes, decoded, encode s, decode s) of one encode and decode, or the error with which
    the codec refused the input."""
    try:
        t0 = time.perf_counter()
        data = encode()
        t1 = time.perf_counter()
        decoded = decode(data)
        t2 = time.perf_counter()
    except MedVAEError as exc:
        return str(exc)
    except RuntimeError as exc:  # a codec library refused the image (imagecodecs errors are RuntimeErrors)
        return f"{type(exc).__name__}: {exc}"
    return data, decoded, t1 - t0, t2 - t1


def evaluate_point(point: ImageCodec, image: Slice) -> tuple[dict[str, Any], np.ndarray | None]:
    """Encode and decode one image with one point: (row, decoded image or None on error)."""
    row = _row(point, image)
    try:
        row["note"] = point.notes(image.pixels, image.bits_stored)
    except MedVAEError as exc:
        row["error"] = str(exc)
        return row, None
    coded = _coded(lambda: point.encode(image.pixels, image.bits_stored), point.decode)
    if isinstance(coded, str):
        row["error"] = coded
        return row, None
    data, decoded, encode_s, decode_s = coded
    return row, _measured(point, image, row, decoded, len(data), encode_s, decode_s)


def evaluate_series_point(point: ImageCodec, series: Sequence[Slice]) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """One point on one series: a series codec (``point.series``) codes the slices as one
    stream, each slice's row getting the stream's bytes and times over the slices; any other
    codec codes each slice on its own (:func:`evaluate_point`)."""
    if not getattr(point, "series", False):
        return [evaluate_point(point, image) for image in series]
    volume = np.stack([image.pixels for image in series])
    bits = max(image.bits_stored for image in series)
    rows = [_row(point, image) for image in series]
    coded = _coded(lambda: point.encode_series(volume, bits), point.decode_series)
    if isinstance(coded, str):
        for row in rows:
            row["error"] = coded
        return [(row, None) for row in rows]
    data, decoded, encode_s, decode_s = coded
    n, note = len(series), point.notes(volume, bits)
    out = []
    for row, image, slice_decoded in zip(rows, series, decoded):
        row["note"] = note
        out.append((row, _measured(point, image, row, slice_decoded, len(data) / n, encode_s / n, decode_s / n)))
    return out


def evaluate(
    images: Sequence[Slice],
    points: Sequence[ImageCodec],
    *,
    progress: bool = True,
    keep: int | None = None,
    meta: dict[str, Any] | None = None,
    series: Sequence[Sequence[int]] | None = None,
) -> EvalResult:
    """Run every point on every image; ``keep`` = index of an image whose decodings to keep.

    With ``series`` (lists of indexes into ``images``, each a series in slice order, e.g.
    :func:`medvae.evaluation.datasets.group_series`), series codecs code each series as one
    stream (:func:`evaluate_series_point`); the rows are per slice either way.
    """
    groups = [list(g) for g in series] if series is not None else [[i] for i in range(len(images))]
    found: dict[tuple[int, str], tuple[dict[str, Any], np.ndarray | None]] = {}
    bar = tqdm(total=len(images) * len(points), disable=not progress, unit="code", desc="evaluate")
    for group in groups:
        for point in points:
            bar.set_postfix_str(point.label, refresh=False)
            results = evaluate_series_point(point, [images[i] for i in group])
            for i, (row, decoded) in zip(group, results):
                found[i, point.label] = (row, decoded if i == keep else None)  # keep one image's decodings only
            bar.update(len(group))
    bar.close()
    rows: list[dict[str, Any]] = []
    decoded_kept: dict[str, tuple[np.ndarray, float]] = {}
    for i in range(len(images)):
        for point in points:
            row, decoded = found[i, point.label]
            rows.append(row)
            if i == keep and decoded is not None:
                decoded_kept[point.label] = (decoded, row["bpp"])
    return EvalResult(rows, summarize(rows, points, meta or {}, n_images=len(images)), decoded_kept)


def _mean(values: list[float]) -> float | None:
    """Mean, ``None`` when empty or when any value is infinite (e.g. a lossless PSNR)."""
    if not values or any(math.isinf(v) for v in values):
        return None
    return float(np.mean(values))


def summarize(rows: list[dict[str, Any]], points: Sequence[ImageCodec], meta: dict[str, Any], n_images: int) -> dict[str, Any]:
    """Summary dict: per codec family, per point, the mean metrics over images.

    PSNRs are means of per-image dB values (``null`` if any image was decoded
    exactly, see ``exact``); ``ms_ssim_db`` is the dB value of the mean MS-SSIM;
    ``max_abs_error`` is the largest over images; times are means in seconds.
    A point is ``complete`` when it coded every image.
    """
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(row["point"], []).append(row)
    codecs: dict[str, Any] = {}
    for point in points:
        mine = by_label.get(point.label, [])
        ok = [r for r in mine if not r["error"]]
        entry: dict[str, Any] = {
            "point": point.label, "knob": point.knob, "value": point.value, "lossless": point.lossless,
            "n_images": len(ok), "n_failed": len(mine) - len(ok), "complete": len(ok) == n_images and n_images > 0,
        }
        for key in MEAN_METRICS:
            vals = [float(r[key]) for r in ok if key in r and r[key] != ""]
            entry[key] = _mean(vals)
        entry["n_ct_images"] = sum(1 for r in ok if "psnr_soft_tissue" in r)
        ms = entry["ms_ssim"]
        entry["ms_ssim_db"] = None if ms is None or ms >= 1.0 else ms_ssim_db(ms)
        entry["max_abs_error"] = max((int(r["max_abs_error"]) for r in ok), default=None)
        entry["exact"] = sum(1 for r in ok if r["exact"])
        entry["native_depth"] = all(r["native_depth"] for r in ok) if ok else None
        entry["notes"] = sorted({r["note"] for r in ok if r["note"]})
        entry["errors"] = sorted({r["error"] for r in mine if r["error"]})
        fam = codecs.setdefault(point.family, {"learned": point.learned, "points": []})
        fam["points"].append(entry)
    for fam in codecs.values():
        fam["points"].sort(key=lambda e: (e["lossless"], e["bpp"] if e["bpp"] is not None else math.inf))
        fam["native_depth"] = all(p["native_depth"] is not False for p in fam["points"])
    return {"format": FORMAT, "meta": {"n_images": n_images, **meta}, "codecs": codecs}


# ------------------------------------------------------------------------ writing


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Per-image table (``COLUMNS``; floats with 6 significant digits, ``inf`` for exact)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    publish(Path(path), buf.getvalue().encode(), overwrite=True)
    return Path(path)


def write_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """The summary as strict JSON (infinite values become ``null``)."""
    publish(Path(path), (json.dumps(_clean(summary), indent=1, allow_nan=False) + "\n").encode(), overwrite=True)
    return Path(path)


def read_summary(path: str | Path) -> dict[str, Any]:
    """Load a summary JSON written by :func:`write_summary` (or ``evaluate.py``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable results file ({exc})") from None
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        raise InputError(f"{path}: not a MedVAE evaluation summary")
    return summary


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary with the codecs of several runs (e.g. classical and learned run apart).

    The runs must cover the same slices (``meta.images``); a codec present in
    two runs is an error rather than a silent overwrite.
    """
    if len(summaries) == 1:
        return summaries[0]
    first = summaries[0]
    images = first.get("meta", {}).get("images")
    merged = {"format": FORMAT, "meta": dict(first.get("meta", {})), "codecs": {}}
    for s in summaries:
        if s.get("meta", {}).get("images") != images:
            raise InputError("cannot merge results computed on different images")
        for name, fam in s["codecs"].items():
            if name in merged["codecs"]:
                raise InputError(f"codec {name!r} appears in more than one results file")
            merged["codecs"][name] = fam
    return merged


def run_metadata(**extra: Any) -> dict[str, Any]:
    """Versions and time of a run, for the summary's ``meta``."""
    import imagecodecs
    import pywt

    import medvae

    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "medvae": medvae.__version__,
        "imagecodecs": imagecodecs.__version__,
        "pywavelets": pywt.__version__,
        **extra,
    }


def table(summary: dict[str, Any], metrics: Sequence[str] = ("bpp", "psnr", "psnr_soft_tissue", "ms_ssim", "ms_ssim_db", "max_abs_error", "encode_s", "decode_s")) -> str:
    """The summary as a Markdown table, one line per point."""
    head = ["codec", "point", "n"] + list(metrics)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, fam in summary["codecs"].items():
        for p in fam["points"]:
            cells = [name, p["point"].split("[", 1)[-1].rstrip("]"), str(p["n_images"])]
            for m in metrics:
                v = p.get(m)
                if v is None:
                    cells.append("inf" if m.startswith("psnr") and p["exact"] == p["n_images"] and p["n_images"] else "–")
                elif isinstance(v, float):
                    cells.append(f"{v:.3f}" if m in ("bpp", "encode_s", "decode_s") else (f"{v:.4f}" if m == "ms_ssim" else f"{v:.2f}"))
                else:
                    cells.append(str(v))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "COLUMNS", "EvalResult", "evaluate", "evaluate_point", "merge_summaries", "read_summary",
    "run_metadata", "summarize", "table", "write_csv", "write_summary",
]
