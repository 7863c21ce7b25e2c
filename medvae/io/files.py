"""Small helpers shared by the readers and writers: atomic writes, one-line reasons."""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from collections.abc import Iterator
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
        # mkstemp makes owner-only files; give the result the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
