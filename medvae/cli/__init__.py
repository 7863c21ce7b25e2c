"""The ``medvae`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status). :data:`COMMANDS`
lists the modules in the order ``medvae --help`` shows them.

Errors derived from :class:`medvae.errors.MedVAEError` (and a few expected OS
errors) print as one line on stderr with exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medvae import __version__
from medvae.errors import MedVAEError

#: Subcommand modules (``medvae.cli.<name>``) in help order. Missing ones are skipped.
COMMANDS = ("compress", "decompress", "info", "demo", "data", "train", "train_residual", "evaluate", "bd_rate", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="medvae", description="Learned compression of medical images (CT, MR, X-ray)."
    )
    parser.add_argument("--version", action="version", version=f"medvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"medvae.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medvae`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (MedVAEError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"medvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
