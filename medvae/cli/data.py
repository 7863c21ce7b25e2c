"""``medvae data``: a look at what a corpus holds.

``medvae data summary PATH`` prints, per patient, what :func:`medvae.io.read` makes of a
manifest or folder. (The sample corpus is rebuilt with ``python tools/fetch_samples.py DIR``,
a release tool outside the package.)
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    """Add ``medvae data`` with its ``summary`` subcommand."""
    parser = subparsers.add_parser("data", help="corpus summaries", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    summ = sub.add_parser("summary", help="per-patient table of a manifest or folder as read",
                          description=summary.__doc__)
    summ.add_argument("path", metavar="PATH", help="MANIFEST.csv, a folder holding one, or a plain folder")
    summ.add_argument("--split", default=None, choices=("train", "val", "test"), help="one split only")
    summ.set_defaults(func=summary)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=usage)
