"""Small helpers shared by the readers and writers: atomic writes, one-line reasons.

Every file the project writes goes through :func:`publish` (bytes) or :func:`atomic_path`
(a temporary path for writers that need one): it appears complete under its name or not
at all, with the permissions a plain ``open()`` would give (the umask's).
"""

from __future__ import annotations

import gzip
import io
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success rename it onto ``path``.

    A crash or an exception leaves no partial file behind and never touches an
    existing ``path``: the temporary file is removed instead. Writing into the
    same folder keeps :func:`os.replace` an atomic rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def walk(folder: str | Path, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """The files under ``folder`` (recursively), in sorted path order: the one rule every
    folder argument follows. Hidden files and folders (names starting with ``.``) are left
    out, symlinked folders are not followed (no loops, no escaping the tree), entries that
    cannot be listed are skipped, and ``keep`` (when given) filters the rest."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file() and (keep is None or keep(path)):
                found.append(path)
    return sorted(found)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: its message's lines joined (at most ``limit``
    characters), else its type name."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gzip_bytes(data: bytes, compresslevel: int = 1) -> bytes:
    """Gzip ``data`` reproducibly (no name, time stamp 0), byte for byte as nibabel saves ``.gz``."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=compresslevel, mtime=0) as f:
        f.write(data)
    return buffer.getvalue()


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
