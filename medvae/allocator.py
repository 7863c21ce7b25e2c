"""Keep freed memory for the next layer instead of handing it back to the system (glibc only).

Exact coding allocates and frees tens of tensors of several to tens of megabytes per image, and
a training step the activations and gradients of a batch. glibc's default heuristic hands much
of that back to the system when it is freed (its trim threshold adapts only up to twice the
largest mmapped block it has seen), so the kernel page-faults and zeroes the next buffers again:
on a 512×512 CT series slice, 50,000 to 210,000 page faults (200–820 MB) per encode plus decode,
and 13–15 % of the process' CPU time in the kernel. :func:`keep_freed_memory` raises the mmap
threshold to glibc's largest (32 MiB) and keeps up to :data:`TRIM_THRESHOLD` of free memory at
the heap's top, after which repeated coding faults no page: a series slice codes about a tenth
faster, a training step 13–18 % (``docs/lossless.md``, "Time: memory kept for reuse";
``docs/variable-rate.md``). It changes only where memory comes from, never a value; the process
keeps what it freed (as jemalloc and tcmalloc do). ``MEDVAE_KEEP_FREED_MEMORY=0`` leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
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


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc, once per process (:mod:`medvae.allocator`); True when it is tuned.
    A no-op returning False off glibc, or when :data:`ENVIRONMENT` is ``0``."""
    if os.environ.get(ENVIRONMENT, "1") == "0":
        return False
    return _mallopt((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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
