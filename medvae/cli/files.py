"""Which files a batch command reads, where their outputs go, and how outputs are written safely.

* :func:`plan` expands the command line's inputs (files and folders, walked
  recursively) into :class:`Task` objects, each with an output *base* path that
  mirrors the input tree under ``OUT``; it refuses an ``OUT`` inside an input folder.
* outputs are written with :func:`medvae.io.files.publish`, the project's one atomic
  writer (re-exported here for the subcommands).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medvae.errors import MedVAEError
from medvae.io.files import walk

#: Suffixes removed from an input's name to form its output name (longest first).
KNOWN_SUFFIXES = (
    ".nii.gz", ".dicom", ".tiff", ".nrrd", ".nhdr", ".mvae", ".dcm", ".ima", ".nii", ".png", ".tif", ".npy",
)


class UsageError(MedVAEError):
    """The command line asks for something unsafe or impossible (exit status 2)."""


@dataclass(frozen=True)
class Task:
    """One input file and where its outputs go.

    Attributes:
        source: the input file, as the user named it (relative paths stay relative).
        base: output path without suffix; a single-slice result is ``base + suffix``,
            a multi-slice one ``base / slice_NNNN + suffix``.
    """

    source: Path
    base: Path


@dataclass(frozen=True)
class Problem:
    """An input that cannot become a task (missing path, empty folder, name clash)."""

    source: Path
    reason: str


def strip_suffix(name: str) -> str:
    """``x.dcm`` -> ``x``, ``ct.nii.gz`` -> ``ct``; unknown suffixes stay (``1.2.840.5`` -> itself)."""
    lower = name.lower()
    for suffix in KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def check_output_folder(inputs: Sequence[Path], out: Path) -> None:
    """Raise :class:`UsageError` if ``out`` is, or lies inside, an input folder.

    Outputs written there would be read back as inputs by the next run over
    that folder, and the input tree would be modified.
    """
    out_resolved = out.resolve()
    for path in inputs:
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError:
            continue  # unreadable: reported by plan() as that input's problem
        if is_dir:
            folder = path.resolve()
            if out_resolved == folder or folder in out_resolved.parents:
                raise UsageError(
                    f"output folder {out} is inside input folder {path}; choose an output folder outside the inputs"
                )
        elif is_file and out_resolved == path.resolve().parent:
            raise UsageError(
                f"output folder {out} is the folder of input {path}; choose an output folder apart from the inputs"
            )
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")


def plan(
    inputs: Sequence[str | os.PathLike], out: Path, keep: Callable[[Path], bool] = lambda p: True
) -> tuple[list[Task], list[Problem]]:
    """Tasks for every input file, and the inputs that cannot be processed.

    A file argument goes straight into ``out``; the files of a folder argument
    (those ``keep`` accepts) go to the same relative place under ``out``. Two
    inputs that would share outputs (``a.dcm`` and ``a.png``) make the later one
    a :class:`Problem`.
    """
    paths = [Path(p) for p in inputs]
    check_output_folder(paths, out)
    tasks: list[Task] = []
    problems: list[Problem] = []
    owners: dict[Path, Path] = {}
    seen: set[Path] = set()
    for arg in paths:
        try:
            is_dir, is_file = arg.is_dir(), arg.is_file()
        except OSError as exc:
            problems.append(Problem(arg, f"cannot read it ({exc.strerror or exc})"))
            continue
        if is_dir:
            files = walk(arg, keep)
            if not files:
                problems.append(Problem(arg, "no input files in this folder"))
            pairs = [(f, out / f.relative_to(arg).parent) for f in files]
        elif is_file:
            pairs = [(arg, out)]
        else:
            problems.append(Problem(arg, "no such file or folder"))
            continue
        for source, folder in pairs:
            resolved = source.resolve()
            if resolved in seen:
                continue  # named twice (a file and its folder): process once
            seen.add(resolved)
            base = folder / strip_suffix(source.name)
            key = Path(os.path.normcase(base.resolve()))
            if key in owners:
                problems.append(Problem(source, f"output name clashes with {owners[key]}; rename one of them"))
                continue
            owners[key] = source
            tasks.append(Task(source, base))
    return tasks, problems


def slice_paths(base: Path, n_slices: int, suffix: str) -> list[Path]:
    """Output files of an input with ``n_slices`` slices: ``base.suffix``, or ``base/slice_NNNN.suffix``."""
    if n_slices == 1:
        return [base.with_name(base.name + suffix)]
    width = max(4, len(str(n_slices - 1)))
    return [base / f"slice_{i:0{width}d}{suffix}" for i in range(n_slices)]


# ------------------------------------------------------------------ writing
