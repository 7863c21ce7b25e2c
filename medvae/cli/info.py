"""``medvae info``: what a ``.mvae`` file holds, read from its header without decoding the image.

The container is verified (magic, lengths, CRC) before anything is shown, so a
damaged file is reported as such. Shows the model and the fingerprint of its
weights (and whether they are installed), the image's shape, dtype, bit depth
and intensity mapping, the bytes (image data and stored source header), bits
per pixel and compression ratio, the quality and PSNR achieved (variable-rate files record
both; lossless files are exact; near-lossless ones have a PSNR floor set by their bound),
and the source the slice came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medvae.cli import batch
from medvae.errors import BitstreamError


def describe(path: Path) -> dict[str, Any]:
    """Everything ``medvae info`` shows about one file, as plain values."""
    from medvae import bitstream, metrics, source_metadata, zoo
    data = Path(path).read_bytes()
    header, _, meta = bitstream.unpack(data)
    h, w = header.shape
    image_bytes = header.n_bytes - header.metadata_bytes
    try:
        weights = zoo.path_for_fingerprint(header.model, header.fingerprint).name
    except BitstreamError:
        weights = None
    info: dict[str, Any] = {
        "file": str(path),
        "format": header.version,
        "model": header.model,
        "fingerprint": header.fingerprint,
        "weights_installed": weights,
        "weights_package": zoo.optional_package(header.model, header.fingerprint),
        "shape": [h, w],
        "dtype": str(header.dtype),
        "bits_stored": header.bits_stored,
        "value_range": list(header.value_range),
        "latent_shape": list(header.latent_shape),
        "bytes": header.n_bytes,
        "image_bytes": image_bytes,
        "metadata_bytes": header.metadata_bytes,
        "bpp": metrics.bpp(header.n_bytes, (h, w)),
        "image_bpp": metrics.bpp(image_bytes, (h, w)),
        "compression_ratio": metrics.compression_ratio(image_bytes, (h, w), header.bits_stored) if header.bits_stored else None,
        "source": None,
        "exceptions": None,
        "mode": _mode(header.max_error, header.tighter_passes, header.quantizer_bound),
        "max_error": header.max_error,
        "quantizer_bound": header.quantizer_bound,
        "residual_bytes": sum(len(s) for s in header.residual_strings),
        "residual_fingerprint": header.residual_fingerprint or None,
        "previous_slice_crc": None if header.previous_crc is None else f"{header.previous_crc:08x}",
        "earlier_slice_crc": None if header.earlier_crc is None else f"{header.earlier_crc:08x}",
        "quality": header.quality,
        "correction_bytes": len(header.correction) or None,
        "adaptation_bytes": len(header.residual_strings[2]) if header.version in bitstream.ADAPTED_VERSIONS else None,
        "base_predicted_pairs": _predicted_pairs(header.base_prediction),
        "hyper_predicted_table": _hyper_table(header.base_prediction),
        "base_step": _base_step(header),
        "residual_laws": _laws(header),
        "psnr": _psnr(header),
        "psnr_at_least": _psnr_floor(header),
    }
    if header.exceptions:
        from medvae.exceptions import Exceptions

        exc = Exceptions.unpack(header.exceptions, header.shape)
        info["exceptions"] = {
            "padding_value": exc.padding_value,
            "padding_pixels": exc.padding_pixels,
            "extreme_pixels": int(exc.index.size),
            "bytes": len(header.exceptions),
        }
    if source_metadata.is_source_metadata(meta):
        src = source_metadata.unpack(meta)
        info["source"] = {
            "format": src.format, "name": src.name, "slice": src.slice, "slices": src.slices,
            "modality": src.modality, "bits_stored": src.bits_stored, "signed": src.signed,
        }
        if src.dataset is not None:
            sop = src.dataset.get("SOPClassUID")
            info["source"]["sop_class"] = getattr(sop, "name", None) or (str(sop) if sop else None)
    return info


def _predicted_pairs(block: bytes) -> int | None:
    """How many (channel, scale range) pairs of the base latent a series file codes against the
    previous slice's (``medvae.prediction``); None for a file without a prediction block."""
    from medvae.prediction import predicted_count

    return predicted_count(block) if block else None


def _hyper_table(block: bytes) -> int | None:
    """The table a series file codes its hyper-latent z's difference from the previous slice's
    with (``medvae.prediction.choose_hyper``); None where z is coded alone."""
    from medvae.prediction import block_hyper

    return block_hyper(block) if block else None


def _base_step(header) -> float | None:
    """The quantization step of a residual file's base latent y, in units: a series file's (in its
    prediction block) or a file's coded alone (formats 27 to 29); None for a file at the unit step
    without a prediction block."""
    from medvae.prediction import UNIT_STEP, block_step

    if header.base_prediction:
        return block_step(header.base_prediction) / UNIT_STEP
    return header.base_step / UNIT_STEP if header.base_step != UNIT_STEP else None


def _laws(header) -> list[str] | None:
    """The family of each residual pass's law (``medvae.residual.tables.LAWS``), and whether the
    pass clips its means to its tables' reach (``medvae.residual.adaptation.within_reach``): None
    for a lossy file, or one whose block is damaged (decoding says so)."""
    from medvae import bitstream
    from medvae.residual.adaptation import Adaptation
    from medvae.residual.model import PHASES
    from medvae.residual.tables import LAWS

    if header.max_error is None or header.version not in bitstream.BOUNDED_VERSIONS:
        return None
    if header.version not in bitstream.NAMED_LAW_VERSIONS:
        return ["laplace"] * len(PHASES)
    previous = bitstream.layout(header.version) - bitstream.BOUNDED_RESIDUAL_VERSION  # slices the series model reads
    try:
        passes = Adaptation.from_bytes(header.residual_strings[2], previous).passes
    except BitstreamError:
        return None
    return [LAWS[p.law] + (" (means within reach)" if p.reach else "") for p in passes]


def _psnr(header) -> float | str | None:
    """The PSNR the file achieves, when it says: as measured by a variable-rate encoder, or
    ``"inf"`` (JSON has no infinity) for lossless files and identical pixels."""
    psnr = float("inf") if header.max_error == 0 else header.psnr
    return "inf" if psnr == float("inf") else psnr


def _psnr_floor(header) -> float | None:
    """The least PSNR a near-lossless file can have: every error is at most τ, so MSE ≤ τ²."""
    from medvae.metrics import psnr_from_mse, stored_bits

    return psnr_from_mse(header.max_error**2, 2 ** stored_bits(header.bits_stored, header.dtype) - 1) if header.max_error else None


def _mode(max_error: int | None, tighter_passes: int = 0, quantizer_bound: int | None = None) -> str:
    """How the file bounds its error, in words (an optimized file: the error its encoder measured)."""
    if max_error is None:
        return "lossy"
    if max_error == 0:
        return "lossless (decodes to the input exactly)"
    if quantizer_bound is not None:
        tighter = f", {tighter_passes} of 4 residual passes at step {2 * quantizer_bound - 1}" if tighter_passes else ""
        return f"near-lossless, optimized (step {2 * quantizer_bound + 1}{tighter}): max error {max_error} on every pixel"
    tighter = f" ({tighter_passes} of 4 residual passes within {max_error - 1})" if tighter_passes else ""
    return f"near-lossless, max error {max_error} on every pixel{tighter}"


def format_text(info: dict[str, Any]) -> str:
    """The human-readable block for one file."""
    h, w = info["shape"]
    package = info["weights_package"]
    weights = (f"installed ({info['weights_installed']})" if info["weights_installed"]
               else f"in the optional package {package}, not installed (pip install {package})" if package
               else "not shipped; decode with --model CHECKPOINT")
    bits = f"{info['bits_stored']} bits stored" if info["bits_stored"] else "bits stored unknown"
    lo, hi = info["value_range"]
    ratio = f"{info['compression_ratio']:.2f}:1 (image data vs {info['bits_stored']} bits/pixel)" \
        if info["compression_ratio"] else "-"
    rows = [
        ("file", info["file"]),
        ("format", f"{info['format']}: " + ("exact, decodes to the same pixels on every machine (pixel CRC checked)"
                                            if info["format"] >= 2 else "float decoder of release 0.1; re-encode for exact decoding")),
        ("model", f"{info['model']}, weights {info['fingerprint']} ({weights})"),
        ("image", f"{h} x {w}, {info['dtype']}, {bits}"),
        ("mapping", f"stored values [{lo}, {hi}] -> [0, 1]"),
        ("latent", " x ".join(str(s) for s in info["latent_shape"])),
        ("bytes", f"{info['bytes']:,} total = {info['image_bytes']:,} image"
                  f" + {info['metadata_bytes']:,} source header"),
        ("bpp", f"{info['image_bpp']:.4f} image data, {info['bpp']:.4f} whole file"),
        ("ratio", ratio),
        ("mode", info["mode"] + (f" (residual layer {info['residual_bytes']:,} bytes, model {info['residual_fingerprint']})"
                                 if info["max_error"] is not None else "")),
    ]
    if info["previous_slice_crc"] is not None:
        two = info["earlier_slice_crc"] not in (None, info["previous_slice_crc"])
        given = f"a neighbouring slice of its series (pixel CRC {info['previous_slice_crc']})"
        if two:
            given += f" and the one beyond it (pixel CRC {info['earlier_slice_crc']})"
        rows.append(("series", f"coded given {given}: decodes after {'them' if two else 'it'} "
                               "(medvae decompress finds them beside this file)"))
    if info["base_predicted_pairs"] is not None:
        hyper = "" if info["hyper_predicted_table"] is None else f", and z under table {info['hyper_predicted_table']}"
        rows.append(("base", f"latent quantized with step {info['base_step']:g}, coded against that slice's in "
                             f"{info['base_predicted_pairs']} (channel, scale range) pairs{hyper} (medvae.prediction)"))
    elif info["base_step"] is not None:
        rows.append(("base", f"latent quantized with step {info['base_step']:g}, the step this image's noise calls for "
                             "(medvae.prediction.noise_step)"))
    if info["quality"] is not None:
        rows.append(("quality", f"{info['quality']:g} (variable-rate model)"))
    if info["correction_bytes"]:
        rows.append(("correction", f"{info['correction_bytes']} bytes: intensity offsets and a filter the encoder fitted, "
                                   "applied exactly by every decoder (medvae.correction)"))
    if info["adaptation_bytes"]:
        rows.append(("adaptation", f"{info['adaptation_bytes']} bytes: per-pass corrections of the residual laws the encoder "
                                   "fitted to this image, applied exactly by every decoder (medvae.residual.adaptation)"))
    if info["residual_laws"]:
        rows.append(("laws", f"{', '.join(info['residual_laws'])} (the residual passes' law families, in coding order)"))
    if info["psnr"] is not None:
        rows.append(("psnr", "infinite (identical pixels)" if info["psnr"] == "inf"
                     else f"{info['psnr']:.2f} dB, measured by the encoder at the bits stored"))
    elif info["psnr_at_least"] is not None:
        rows.append(("psnr", f"at least {info['psnr_at_least']:.2f} dB (guaranteed by the error bound)"))
    exc = info["exceptions"]
    if exc:
        padding = f"padding {exc['padding_value']} on {exc['padding_pixels']:,} pixels" if exc["padding_pixels"] else "no padding"
        rows.append(("exact", f"{padding}, {exc['extreme_pixels']} extreme pixel(s); {exc['bytes']:,} bytes, restored exactly"))
    src = info["source"]
    if src:
        where = f"slice {src['slice'] + 1} of {src['slices']}"
        extra = f", {src['sop_class']}" if src.get("sop_class") else ""
        rows.append(("source", f"{src['format']} {src['name']} ({where}), {src['modality']}{extra}"))
    else:
        rows.append(("source", "not recorded (decodes to .npy)"))
    width = max(8, *(len(label) for label, _ in rows))  # 8: the usual labels
    return "\n".join(f"{label:<{width}} {value}" for label, value in rows)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``medvae info``: exit 1 if any file could not be read."""
    results, status = [], 0
    for name in args.files:
        path = Path(name)
        try:
            with batch.quiet_warnings(args.debug):
                results.append(describe(path))
        except Exception as exc:  # one line per file, then the next
            if args.debug:
                raise
            print(f"{path}: {batch.reason(exc, path)}", file=sys.stderr)
            status = 1
            continue
        if not args.json:
            if len(results) > 1:
                print()
            print(format_text(results[-1]))
    if args.json:
        print(json.dumps(results, indent=2))
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="show a .mvae file's header without decoding it", description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE.mvae")
    parser.add_argument("--json", action="store_true", help="print JSON (a list, one object per file)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser.set_defaults(func=run)
