"""Which files a batch command reads, where their outputs go, and how outputs are written safely.

* :func:`plan` expands the command line's inputs (files and folders, walked
  recursively) into :class:`Task` objects, each with an output *base* path that
  mirrors the input tree under ``OUT``; it refuses an ``OUT`` inside an input folder.
* :func:`publish` writes bytes so that the file appears complete under its name or
  not at all, never replaces an existing file unless asked, and leaves nothing
  behind when the process is killed (Linux ``O_TMPFILE``; elsewhere a hidden
  temporary file that is removed on any Python-level interruption).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medvae.errors import MedVAEError

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


def walk(folder: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """Files under ``folder`` (recursively, sorted), without hidden files or folders, symlinked folders not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and path.is_file() and keep(path):
                found.append(path)
    return found


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


def publish(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically.

    The file appears under its name complete, or not at all. Without
    ``overwrite`` an existing ``path`` is never replaced (:class:`FileExistsError`,
    checked atomically by the final link). On Linux the data goes to an unnamed
    ``O_TMPFILE`` first, so even ``kill -9`` leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists")
    if _publish_tmpfile(path, data, overwrite):
        return
    _publish_named(path, data, overwrite)


def _publish_tmpfile(path: Path, data: bytes, overwrite: bool) -> bool:
    """``O_TMPFILE`` + ``linkat``; False where the platform or file system cannot.

    The data goes to an unnamed file in the destination folder; a link through
    ``/proc/self/fd`` names it once it is complete. With ``overwrite`` it is
    linked under a hidden name and renamed over ``path`` (a kill between the two
    steps can leave that hidden name behind, never a partial ``path``).
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    fd = -1
    try:
        try:
            fd = os.open(".", flag | os.O_WRONLY, 0o666, dir_fd=dir_fd)
        except OSError:
            return False
        _write_all(fd, data)
        os.fsync(fd)
        name = path.name if not overwrite else f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # With a dir fd, os.link calls linkat(..., AT_SYMLINK_FOLLOW), so the
            # /proc link resolves to the unnamed file instead of being linked itself.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
        except FileExistsError:
            raise FileExistsError(f"{path} exists") from None
        except OSError:
            return False
        if overwrite:
            try:
                os.replace(name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                os.unlink(name, dir_fd=dir_fd)
                raise
        return True
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(dir_fd)


def _publish_named(path: Path, data: bytes, overwrite: bool) -> None:
    """Portable fallback: hidden temporary file in the folder, then link or rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists") from None
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
