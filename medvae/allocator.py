"""Keep freed memory for the next layer instead of handing it back to the system (glibc only).

Exact coding allocates and frees tens of tensors of several to tens of megabytes per image.
glibc's default heuristic hands most of them back to the system when they are freed (its trim
threshold adapts only up to twice the largest mmapped block it has seen), so the next layer's
buffer is page-faulted and zeroed again by the kernel: on a 512×512 CT series slice, 50,000 to
170,000 page faults (200–670 MB) per encode plus decode, about 7 % of its time on 2 cores
(``docs/lossless.md``, "Time: memory kept for reuse"). :func:`keep_freed_memory` raises the mmap
threshold to glibc's largest (32 MiB) and keeps up to :data:`TRIM_THRESHOLD` of free memory at
the heap's top, after which repeated coding faults no page in steady state. It changes only
where memory comes from, never a value; set ``MEDVAE_KEEP_FREED_MEMORY=0`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (glibc's largest mmap threshold, 4·1024·1024·sizeof(long)).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top that is kept for reuse rather than returned to the system.
TRIM_THRESHOLD = 512 << 20
#: The environment variable that turns the tuning off (``0``).
ENVIRONMENT = "MEDVAE_KEEP_FREED_MEMORY"

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (:mod:`medvae.allocator`); True when it is tuned.
    A no-op returning False off glibc, or when :data:`ENVIRONMENT` is ``0``."""
    if "tuned" not in _state:
        _state["tuned"] = os.environ.get(ENVIRONMENT, "1") != "0" and _mallopt(
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return _state["tuned"]


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` settings; False where there is no glibc or one is refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
