"""What the batch subcommands share: per-file options, the model loader and their common arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from medvae.cli.files import UsageError
from medvae.errors import MedVAEError
from medvae.series import CHAIN

if TYPE_CHECKING:  # the CLI imports rate control (and torch) only when a target is given
    from medvae.rate_control import Target


@dataclass(frozen=True)
class Options:
    """Per-file behaviour shared by every job."""

    force: bool = False
    skip_existing: bool = False
    debug: bool = False
    refine_steps: int = 0
    max_error: int | None = None  # lossless (0) or near-lossless coding; None: lossy
    target: Target | None = None  # rate control picks each slice's setting
    iterations: int | None = None  # a progressive model's iteration count (rnn-conv); None: all
    series: bool = False  # a volume's slices coded given a neighbour (with max_error; key slices alone)
    max_chain: int = CHAIN  # --series: a slice decodes after at most max_chain others (medvae.series.coding_plan)
    series_ranks: dict = field(default_factory=dict)  # --series: each single-slice DICOM file's medvae.cli.series_order.Rank
    series_tasks: dict = field(default_factory=dict)  # --series: each single-slice DICOM file's Task, by (series, rank)
    series_at_once: bool = False  # --series: a DICOM series' runs coded as one graph (the batch runs in this process)
    decode_groups: dict = field(default_factory=dict)  # decompress: a group's first file (str) -> the group's Tasks, in order


@lru_cache(maxsize=2)
def load_codec(model: str, quality: float | None = None):
    """The codec for ``--model``/``--quality`` (cached: each process loads it once).

    A checkpoint that does not fit the installed model code (a state-dict
    mismatch, a damaged file) is a one-line :class:`MedVAEError`, not a traceback.
    """
    import medvae
    try:
        return medvae.load(model, quality)  # the name was checked by check_model_args
    except (MedVAEError, FileNotFoundError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MedVAEError(
            f"{model}: cannot load the model ({type(exc).__name__}: {first}); "
            "was it written by another MedVAE version?"
        ) from exc


def check_model_args(model: str, quality: float | None) -> None:
    """``--model`` names a checkpoint file or a shipped model that has ``--quality`` (a
    checkpoint file has exactly one quality, unless it is variable-rate: the codec checks
    that when it loads): checked before anything is loaded."""
    from medvae import zoo
    try:
        zoo.resolve(model, quality, hint="pass --model CHECKPOINT")
    except (FileNotFoundError, MedVAEError) as exc:
        raise UsageError(str(exc)) from None


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``-o``, ``--force``, ``--skip-existing``, ``--workers``, ``--debug``: shared with decompress."""
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave existing outputs alone and count them (resume an interrupted run)")
    parser.add_argument("--workers", type=int, default=None, metavar="K",
                        help="files processed in parallel, each worker with cores/K torch threads (default: what "
                             "measured fastest, one worker per 2 cores for compress and per core for decompress, "
                             "at most one per two files)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--refine`` and ``--refine-steps``: encoder-side latent refinement; shared with evaluate."""
    parser.add_argument("--refine", action="store_true",
                        help="fit the latents to each slice before coding them (medvae.refine): higher fidelity "
                             "at about the same size, the same decoder, a much slower encoder (about 30 s per "
                             "512x512 slice and worker)")
    parser.add_argument("--refine-steps", type=_steps, default=None, metavar="N",
                        help="gradient steps per slice for --refine (default 50)")


def add_error_bound_arguments(parser: argparse.ArgumentParser) -> None:
    """``--lossless`` and ``--max-error`` (the residual layer: lossless and near-lossless coding)
    and the rate-control targets ``--ratio``, ``--bpp``, ``--psnr``: one of them at most."""
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--lossless", action="store_true",
                       help="code losslessly: the decoded image equals the input (lossy base plus a learned residual layer)")
    bound.add_argument("--max-error", type=_max_error, default=None, metavar="T",
                       help="near-lossless: every decoded pixel within T of the input, guaranteed (T >= 1)")
    bound.add_argument("--ratio", type=_positive, default=None, metavar="R",
                       help="rate control: the best file at or below R:1 compression (against the bits stored)")
    bound.add_argument("--bpp", type=_positive, default=None, metavar="B",
                       help="rate control: the best file at or below B bits per pixel")
    bound.add_argument("--psnr", type=_positive, default=None, metavar="P",
                       help="rate control: the smallest file with PSNR of at least P dB (at the bits stored); past the "
                            "lossy reach, rate control's near-lossless files declare the max error they have (--max-error "
                            "for a bound of your own)")


def rate_target(args: argparse.Namespace) -> Target | None:
    """The rate-control target the options ask for, or None."""
    if args.ratio is None and args.bpp is None and args.psnr is None:
        return None
    from medvae.rate_control import Target

    try:
        return Target(args.ratio, args.bpp, args.psnr)
    except MedVAEError as exc:
        raise UsageError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def max_error(args: argparse.Namespace) -> int | None:
    """The error bound the options ask for: 0 lossless, T near-lossless, None lossy."""
    return 0 if args.lossless else args.max_error


def _max_error(text: str) -> int:
    """``--max-error`` value: an integer bound in 0..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 (lossless) to 65535, got {text!r}")
    return value


def refine_steps(args: argparse.Namespace) -> int:
    """Steps the ``--refine`` options ask for (0: no refinement)."""
    from medvae.refine import DEFAULT_STEPS

    if args.refine_steps is not None and not args.refine:
        raise UsageError("--refine-steps needs --refine")
    return (args.refine_steps or DEFAULT_STEPS) if args.refine else 0


def _steps(text: str) -> int:
    """``--refine-steps`` value: a positive step count."""
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}")
    return steps
