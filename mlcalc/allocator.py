"""Process allocator settings that keep MD steps from page-faulting.

An MD step allocates and frees the same large edge-wise tensors (pairs × 3 ×
features, tens of MB) every step. glibc serves blocks above its mmap
threshold with fresh ``mmap`` calls and returns them with ``munmap``, and it
trims the heap top back to the OS, so every step faults its memory in again:
on the project's VM that was a third of the step time (PaiNN 128×3, 500
atoms: 420–560 → 580–730 atom-steps/s with the settings below).

:func:`keep_freed_memory` asks glibc to serve large blocks from the heap and
to keep freed memory for reuse. The process's memory then stays at its peak
instead of shrinking between steps, which is what a simulation wants. It is
applied once per process by :class:`mlcalc.calculator.MLCalculator`; set
``MLCALC_MALLOC=default`` (or any ``MALLOC_*`` glibc variable) to keep the
system's behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for repeated large allocations; True if applied.

    Does nothing (returns False) off Linux/glibc, when ``MLCALC_MALLOC`` is
    ``default``, or when the user set any ``MALLOC_*`` variable themselves.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("MLCALC_MALLOC") == "default":
        return False
    if any(key.startswith("MALLOC_") for key in os.environ):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(_M_MMAP_MAX, 0))  # large blocks from the heap, not fresh mmaps
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # never hand freed memory back
    ok &= bool(mallopt(_M_TOP_PAD, 256 * 2**20))  # grow the heap in 256 MB steps
    _applied = ok
    return ok
