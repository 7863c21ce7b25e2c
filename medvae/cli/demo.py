"""``medvae demo``: compress a sample CT slice, restore it, and compare with JPEG 2000 at the same size.

The sample is a CT slice of the sample corpus when it is present (a test-split
slice the models never trained on), else ``CT_small.dcm`` that ships with
pydicom; ``--input`` takes your own DICOM file. The demo compresses with the
default model (or ``--model``), decodes, and prints bits per pixel, compression
ratio, PSNR, windowed PSNR (CT) and maximum error, with the same figures for
JPEG 2000 (OpenJPEG) coded to the largest size not above MedVAE's. It writes the
``.mvae`` file, the restored DICOM and a side-by-side PNG with error maps.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvae.cli.files import UsageError, strip_suffix
from medvae.io.files import publish

#: Corpus slices tried first (relative to the corpus folder): test split, 512×512 CT.
CORPUS_SAMPLES = ("ct/dicompyler-neck/ct.0.dcm", "ct/cornerstone-neck/CTImage.dcm")


@dataclass
class Result:
    """One codec's figures on the sample."""

    name: str
    n_bytes: int
    bpp: float
    ratio: float
    psnr: float
    window_psnr: float | None
    max_error: int
    decoded: np.ndarray
    note: str = ""


def corpus_roots() -> list[Path]:
    """Where a sample corpus may be: ``$MEDVAE_CORPUS``, then ``shared/data/corpus`` beside the checkout."""
    import medvae

    roots = [Path(os.environ["MEDVAE_CORPUS"])] if os.environ.get("MEDVAE_CORPUS") else []
    roots.append(Path(medvae.__file__).resolve().parents[2] / "shared" / "data" / "corpus")
    return roots


def find_sample() -> tuple[Path, str]:
    """(DICOM file, where it comes from): a corpus CT slice if present, else pydicom's ``CT_small.dcm``."""
    for root in corpus_roots():
        for rel in CORPUS_SAMPLES:
            if (root / rel).is_file():
                return root / rel, "the sample corpus"
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")), "pydicom's test data"


def jpeg2000_at(image: np.ndarray, bits: int, target_bytes: int) -> tuple[bytes, np.ndarray, str]:
    """JPEG 2000 stream no larger than ``target_bytes`` (the largest such), its decoding, and a note."""
    from medvae.evaluation.codecs import target_rate_search
    from medvae.evaluation.jpeg2000 import JPEG2000

    def encode_at(ratio: float) -> bytes:  # larger ratio, fewer bytes
        return JPEG2000(bits / ratio).encode(image, bits)

    data = target_rate_search(encode_at, target_bytes, lo=1.0, hi=8.0 * bits * image.size / 64)
    note = "" if len(data) <= target_bytes else "smallest stream OpenJPEG makes is larger than MedVAE's"
    return data, JPEG2000(1.0).decode(data), note


def figures(name: str, image: np.ndarray, decoded: np.ndarray, n_bytes: int, stack, note: str = "") -> Result:
    """The demo's figures for one decoded image."""
    from medvae import metrics

    window = display_window(stack, image) if stack.modality == "CT" else None
    slope, intercept = stack.rescale_of(0)
    return Result(
        name=name,
        n_bytes=n_bytes,
        bpp=metrics.bpp(n_bytes, image.shape),
        ratio=metrics.compression_ratio(n_bytes, image.shape, stack.bits_stored),
        psnr=metrics.psnr(image, decoded, stack.bits_stored),
        window_psnr=(metrics.windowed_psnr(image, decoded, *window, slope, intercept) if window else None),
        max_error=metrics.max_abs_error(image, decoded),
        decoded=decoded,
        note=note,
    )


def display_window(stack, image: np.ndarray) -> tuple[float, float]:
    """(center, width) in rescaled units: the file's first window, soft tissue for CT, else the 0.5–99.5 % range."""
    from medvae.metrics import CT_WINDOWS, to_hu

    if stack.windows:
        return stack.windows[0]
    if stack.modality == "CT":
        return CT_WINDOWS["soft_tissue"]
    lo, hi = np.percentile(to_hu(image, *stack.rescale_of(0)), [0.5, 99.5])
    return (lo + hi) / 2, max(hi - lo, 1.0)


def comparison_png(stack, image: np.ndarray, results: list[Result], title: str) -> bytes:
    """Side-by-side PNG: original and each decoded image on top, their absolute errors below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medvae.metrics import to_hu

    center, width = display_window(stack, image)
    slope, intercept = stack.rescale_of(0)
    cmap = "gray_r" if stack.photometric == "MONOCHROME1" else "gray"
    errors = [np.abs(r.decoded.astype(np.int64) - image.astype(np.int64)) for r in results]
    scale = error_scale(errors)
    n = len(results) + 1
    fig = Figure(figsize=(5.2 * n, 11.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=13)
    panels = [("original", image, f"window W{width:g} L{center:g}")] + [(r.name, r.decoded, _caption(r)) for r in results]
    for col, (name, img, caption) in enumerate(panels):
        ax = fig.add_subplot(2, n, col + 1)
        ax.imshow(to_hu(img, slope, intercept), cmap=cmap, vmin=center - width / 2, vmax=center + width / 2)
        ax.set_title(f"{name}\n{caption}", fontsize=11)
        ax.axis("off")
    ax = fig.add_subplot(2, n, n + 1)
    ax.axis("off")
    ax.text(0.02, 0.5, f"absolute error, in stored values\n\none colour scale for every map:\n0 (black) to {scale}"
            "\n(the 99.9th percentile of all\nerrors); larger errors show\nat full brightness, and each\n"
            "map's title gives its maximum", fontsize=11, va="center")
    for col, (r, err) in enumerate(zip(results, errors)):
        ax = fig.add_subplot(2, n, n + col + 2)
        shown = ax.imshow(err, cmap="inferno", vmin=0, vmax=scale, interpolation="antialiased")
        ax.set_title(f"|error| {r.name}\nmean {err.mean():.2f}, max {r.max_error}", fontsize=11)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, extend="max" if err.max() > scale else "neither")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def error_scale(errors: list[np.ndarray]) -> int:
    """Top of the shared error colour scale: the 99.9th percentile of all errors (at least 1),
    so that one large error does not turn every map black."""
    return max(1, int(np.ceil(np.percentile(np.concatenate([e.ravel() for e in errors]), 99.9))))


def _caption(r: Result) -> str:
    window = f", {r.window_psnr:.2f} dB windowed" if r.window_psnr is not None else ""
    return f"{r.n_bytes:,} bytes, {r.bpp:.3f} bpp ({r.ratio:.1f}:1)\nPSNR {r.psnr:.2f} dB{window}"


def format_table(results: list[Result], bits: int, window: tuple[float, float] | None) -> str:
    """The figures as an aligned text table."""
    head = ["", "bytes", "bpp", "ratio", f"PSNR ({bits}-bit)"]
    if window:
        head.append(f"PSNR W{window[1]:g}/L{window[0]:g}")
    head.append("max error")
    rows = [head]
    for r in results:
        row = [r.name, f"{r.n_bytes:,}", f"{r.bpp:.3f}", f"{r.ratio:.1f}:1", _db(r.psnr)]
        if window:
            row.append(_db(r.window_psnr))
        row.append(f"{r.max_error}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "lossless" if value == float("inf") else f"{value:.2f} dB"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``medvae demo``."""
    from medvae.cli.batch import quiet_warnings

    with quiet_warnings(args.debug):
        return demo(args)


def demo(args: argparse.Namespace) -> int:
    """Run the demo (see the module docstring); 0 on success."""
    import torch

    from medvae import io as mio
    from medvae import source_metadata
    from medvae.cli.common import check_model_args, load_codec
    from medvae.cli.restore import render

    if args.input:
        sample, origin = Path(args.input), "your input"
    else:
        sample, origin = find_sample()
    out = Path(args.output)
    stem = strip_suffix(sample.name)
    paths = {
        "mvae": out / f"{stem}.mvae",
        "dicom": out / f"{stem}_restored.dcm",
        "png": out / f"{stem}_comparison.png",
    }
    if args.model is None:
        from medvae import zoo

        args.model = zoo.default_model()
    check_model_args(args.model, args.quality)
    codec = load_codec(args.model, args.quality)
    if sample.resolve() in {p.resolve() for p in paths.values()}:
        raise UsageError("refusing to overwrite the input")
    if not args.force:
        for path in paths.values():
            if path.exists():
                raise FileExistsError(f"{path} exists; pass --force to overwrite it, or -o to choose another folder")

    stack = mio.read(sample)
    if stack.source_format != "dicom":
        raise UsageError(f"{sample}: the demo needs a DICOM file")
    image = stack.pixels[0]
    meta = source_metadata.pack(source_metadata.from_stack(stack, 0))
    t0 = time.perf_counter()
    data = codec.compress(image, bits_stored=stack.bits_stored, metadata=meta)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = codec.decompress(data)
    t_dec = time.perf_counter() - t0
    image_bytes = len(data) - len(meta)

    results = [figures("MedVAE", image, decoded, image_bytes, stack)]
    j2k_error = ""
    try:
        j2k, j2k_decoded, note = jpeg2000_at(image, stack.bits_stored, image_bytes)
        results.append(figures("JPEG 2000", image, j2k_decoded, len(j2k), stack, note))
    except Exception as exc:  # e.g. an image too small for 6 resolution levels
        j2k_error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    h, w = image.shape
    title = (f"{sample.name} from {origin}: {h} x {w} {stack.modality}, {stack.bits_stored} bits stored, "
             f"model {codec.name} (weights {codec.fingerprint})")
    ratio = results[0].ratio
    restored = render(decoded, source_metadata.unpack(meta), compression_ratio=ratio, name=str(paths["dicom"]))
    png = comparison_png(stack, image, results, title)
    publish(paths["mvae"], data, overwrite=args.force)
    publish(paths["dicom"], restored, overwrite=args.force)
    publish(paths["png"], png, overwrite=args.force)

    window = display_window(stack, image) if stack.modality == "CT" else None
    print(f"MedVAE demo: {title}")
    print()
    print(format_table(results, stack.bits_stored, window))
    print()
    print(f"MedVAE: encode {t_enc:.2f} s, decode {t_dec:.2f} s ({codec.device.type.upper()}, {torch.get_num_threads()} threads). "
          f"Its bytes are the whole bitstream (header and CRC included),\n"
          f"        not counting the {len(meta):,}-byte DICOM header stored beside it to restore the DICOM file.")
    if j2k_error:
        print(f"JPEG 2000: not run ({j2k_error})")
    elif results[-1].note:
        print(f"JPEG 2000: {results[-1].note}")
    else:
        print("JPEG 2000: OpenJPEG, largest stream not above MedVAE's size.")
    print()
    print(f"wrote {paths['mvae']}  (what you store: {len(data):,} bytes)")
    print(f"      {paths['dicom']}  (restored DICOM, lossy-compression attributes set)")
    panels = " | ".join(["original"] + [r.name for r in results])
    print(f"      {paths['png']}  ({panels}, error maps below)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="compress a sample CT slice and compare with JPEG 2000",
        description=__doc__.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, metavar="NAME|CHECKPOINT",
                        help="shipped model name or checkpoint file (default: the shipped default, medvae-ctx)")
    parser.add_argument("--quality", type=float, default=None, metavar="Q",
                        help="quality (medvae-ctx: any number from 0 to 7; the medvae ladder: 1 to 7); default: the model's")
    parser.add_argument("--input", default=None, metavar="DICOM", help="your own DICOM slice instead of the sample")
    parser.add_argument("-o", "--output", default="medvae-demo", metavar="OUT",
                        help="folder for the outputs (default: ./medvae-demo)")
    parser.add_argument("--force", action="store_true", help="overwrite earlier demo outputs")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser.set_defaults(func=run)
