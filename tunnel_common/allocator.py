"""Give freed memory back to the system (glibc only; a no-op elsewhere).

Measured with bench/memory_bench.py: after 1,000 sessions left, tunneld's RSS stayed far
above its baseline although no Python object was alive. glibc kept the freed memory:
1. large buffers (uvloop's 256 KiB TLS read buffer per connection, grown read buffers) come
   from the heap once glibc's *dynamic* mmap threshold has risen past their size, and the
   heap is only returned from its top;
2. free pages in the middle of the heap stay resident until `malloc_trim`;
3. a departing session leaves reference cycles that only a full garbage collection frees.

`tune()` pins two thresholds, and `trim()` collects cycles and returns free heap pages. The
command lines call `tune()` once; the server calls `trim()` TRIM_INTERVAL_S after a wave of
departures ends (at most TRIM_MAX_DELAY_S after it began), and the client after its proxies
are registered (`TrimTimer`): start-up (the config, the login's scrypt, the imports) leaves
about 0.6 MiB of free heap pages behind in tunnelc.

- The mmap threshold is pinned at 1 MiB, so the bulk path's buffers (uvloop reads up to 256
  KiB per `data_received`, frames are up to 64 KiB) come from the heap and are reused.
- The trim threshold is pinned at 4 MiB, so glibc does not give the heap's top back on every
  free and take it again on the next malloc.

Why (bench/tcp_bench.py, docs/performance.md "Page faults on the bulk path"): with the mmap
threshold pinned at 128 KiB and glibc's default trim threshold, every 256 KiB read was a fresh
mapping and every freed frame shrank the heap. The sending process took 100 to 600 minor page
faults per MB carried (each a zeroed 4 KiB page), about a third of its CPU, and one TLS stream
ran at half the rate it runs without them. Idle memory is still returned by `trim()`, which
releases free pages anywhere in the heap, not only above the trim threshold.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import sys
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD: Final = -1  # mallopt parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD_BYTES: Final = 1024 * 1024  # above every buffer of the bulk path
TRIM_THRESHOLD_BYTES: Final = 4 * 1024 * 1024  # free heap top kept for the next burst
TRIM_INTERVAL_S: Final = 2.0  # trim this long after the last departure of a wave
TRIM_MAX_DELAY_S: Final = 10.0  # but no later than this after its first departure


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    # The process's own symbols, which include the C library it is linked with. Not
    # ctypes.util.find_library("c"): it runs `ldconfig -p` in a subprocess and imports
    # tempfile, shutil, bz2 and lzma (about 1 MiB of RSS) to find the same library.
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl has neither)
    return libc


def tune() -> bool:
    """Pin the mmap and trim thresholds; returns whether the allocator took both."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    ok = bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and ok
    logger.debug(
        "allocator: mmap threshold %d bytes, trim threshold %d bytes: %s",
        MMAP_THRESHOLD_BYTES,
        TRIM_THRESHOLD_BYTES,
        ok,
    )
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


class TrimTimer:
    """Calls `trim()` `interval_s` after the last event of a wave (postponed by later events,
    but never past `max_delay_s` after the wave's first).

    With `quiet`, the trim waits for quiet too: when it is due and `quiet()` is false (work
    is still going on), it looks again every `interval_s`. A trim under load would hand back
    pages the next burst faults in again, and its full collection would pause the loop."""

    __slots__ = (
        *("_first", "_handle", "_interval_s", "_max_delay_s", "_quiet"),
        *("trimmed", "trims"),
    )

    def __init__(
        self,
        interval_s: float = TRIM_INTERVAL_S,
        max_delay_s: float = TRIM_MAX_DELAY_S,
        quiet: Callable[[], bool] | None = None,
    ) -> None:
        self._interval_s = interval_s
        self._max_delay_s = max_delay_s
        self._quiet = quiet
        self._handle: asyncio.TimerHandle | None = None  # the pending trim
        self._first = 0.0  # loop time of the pending wave's first event
        self.trims = 0  # how many times it has trimmed
        self.trimmed = asyncio.Event()  # set by a trim, cleared by the next schedule()

    def schedule(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.trimmed.clear()
        if self._handle is None:
            self._first = now
        else:
            self._handle.cancel()
        due = min(now + self._interval_s, self._first + self._max_delay_s)
        self._handle = loop.call_at(due, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def trim_now(self) -> None:
        """Trim at once (dropping a pending trim): after a one-off like the login."""
        self.cancel()
        self._trim()

    def _fire(self) -> None:
        if self._quiet is not None and not self._quiet():
            self._handle = asyncio.get_running_loop().call_later(self._interval_s, self._fire)
            return
        self._handle = None
        self._trim()

    def _trim(self) -> None:
        self.trims += 1
        trim()
        self.trimmed.set()
