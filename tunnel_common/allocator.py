"""Give freed memory back to the system (glibc only; a no-op elsewhere).

Measured with bench/memory_bench.py: after 1,000 sessions left, tunneld's RSS stayed far
above its baseline although no Python object was alive. glibc kept the freed memory:
1. large buffers (uvloop's 256 KiB TLS read buffer per connection, grown read buffers) come
   from the heap once glibc's *dynamic* mmap threshold has risen past their size, and the
   heap is only returned from its top;
2. free pages in the middle of the heap stay resident until `malloc_trim`.

3. a departing session leaves reference cycles that only a full garbage collection frees.

`tune()` pins the mmap threshold (so every buffer of 128 KiB or more is its own mapping,
unmapped when freed, and its untouched pages never resident), and `trim()` collects cycles
and returns free heap pages. The command lines call `tune()` once; the server calls `trim()`
TRIM_INTERVAL_S after a wave of departures ends (at most TRIM_MAX_DELAY_S after it began).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import sys
from typing import Final

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD: Final = -3  # mallopt parameter number (glibc malloc.h)
MMAP_THRESHOLD_BYTES: Final = 128 * 1024  # glibc's own starting value, made fixed
TRIM_INTERVAL_S: Final = 2.0  # trim this long after the last departure of a wave
TRIM_MAX_DELAY_S: Final = 10.0  # but no later than this after its first departure


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl has neither)
    return libc


def tune() -> bool:
    """Pin the mmap threshold; returns whether the allocator took it."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    logger.debug("allocator: mmap threshold pinned at %d bytes: %s", MMAP_THRESHOLD_BYTES, ok)
    return ok


def trim() -> bool:
    """Free cyclic garbage, then return free heap memory to the system; returns whether the
    allocator released any. A session leaves reference cycles (tasks, futures, exceptions
    with their frames) that only a full collection frees, and a wave of departures can hold
    tens of MiB that way until the collector's oldest generation happens to run."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
