"""glibc malloc settings for CPU runs: keep freed tensor memory in the heap.

A PGD-EoT step frees and re-allocates every activation of 11+ UNet calls. With glibc's
defaults, blocks above a dynamic threshold (128 KiB at start) are ``mmap``-ed and returned to
the kernel on ``free``, and the heap top is trimmed at 128 KiB, so each step pays fresh page
faults for all of its activations. ``bench perf --model toy --batch 64 --eot 10`` measured the
PGD step at 1.10-1.25x its compute floor with the defaults and 1.01x with the settings below
(the floor itself unchanged), i.e. 10-20% of a CPU run was page faults.

Hand-written (``ctypes.mallopt``) because no listed dependency sets allocator options and the
drop-in allocators (jemalloc, tcmalloc) are system packages that must be preloaded before the
interpreter starts. The settings change speed and resident memory only, never a computed value.
Opt out with ``BENCH_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# 32 MiB is the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger
# requests are still mmap-ed. Trim threshold and top pad keep freed memory for the next step.
GLIBC_SETTINGS: dict[str, tuple[int, int]] = {
    "mmap_threshold": (_M_MMAP_THRESHOLD, 32 * 1024 * 1024),
    "trim_threshold": (_M_TRIM_THRESHOLD, 2**31 - 1),
    "top_pad": (_M_TOP_PAD, 256 * 1024 * 1024),
}

_applied: dict[str, int] = {}


def tune_glibc_malloc() -> dict[str, int]:
    """Apply :data:`GLIBC_SETTINGS` once per process; return what was applied (empty when not
    on glibc, opted out, or a call was refused)."""
    if _applied:
        return dict(_applied)
    if os.environ.get("BENCH_MALLOC_TUNING", "1") == "0":
        return {}
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return {}
    for name, (param, value) in GLIBC_SETTINGS.items():
        if libc.mallopt(param, value) != 1:
            logger.warning("glibc refused mallopt(%s=%d); keeping its default", name, value)
            continue
        _applied[name] = value
    return dict(_applied)


def malloc_tuned() -> bool:
    """Whether this process runs with the tuned settings (recorded with each run's device)."""
    return bool(_applied)
