"""Accept deadlines: one timer per session for every stream waiting for the peer's ACK.

A stream the server opens for a visitor must be accepted within `userConnTimeout`, or it is
reset (ACCEPT_TIMEOUT). A timer per stream cost a TimerHandle, a loop timer started and
stopped, per connection; here a session keeps its waiting streams in one table and one timer
sweeps them (docs/performance.md, "Opening a stream").

The table is a dict per timeout value, each in insertion order, which is deadline order (one
monotonic clock, one timeout), so a sweep pops expired entries from the front and stops at the
first that is not due: O(expired + distinct timeouts). An entry leaves when its stream is
accepted, reset or closed (`discard`), also while a sweep is expiring others. Bound: one
entry per open stream of the session (the core's `max_streams`). The timer is not cancelled
when the table empties: it fires once at the deadline it was set for, finds nothing due and
re-arms only if something waits, so a busy session sets it about once per timeout instead of
once per stream.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class AcceptDeadlines(Generic[T]):
    """Items due at a time; `expire(item, timeout_s)` is called for each one that passes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[T, float], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._due: dict[float, dict[T, float]] = {}  # timeout_s -> {item: deadline}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # Items a running sweep found due and has not expired yet: an expiry may accept,
        # reset or move another (or close the session), and that one must not expire after.
        self._expiring: dict[T, float] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._due.values())

    def add(self, item: T, timeout_s: float) -> None:
        """Expire `item` in `timeout_s` unless it is discarded first (a second add moves it)."""
        self.discard(item)
        at = self._loop.time() + timeout_s
        items = self._due.get(timeout_s)
        if items is None:
            items = self._due[timeout_s] = {}
        items[item] = at
        if at < self._timer_at:
            self._arm(at)

    def discard(self, item: T) -> None:
        if self._expiring and self._expiring.pop(item, None) is not None:
            return
        for timeout_s, items in self._due.items():
            if items.pop(item, None) is not None:
                if not items:
                    del self._due[timeout_s]
                return

    def close(self) -> None:
        """Forget every item and stop the timer (the session ended)."""
        self._due.clear()
        self._expiring.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        expiring = self._expiring
        for timeout_s, items in list(self._due.items()):
            while items:
                item, at = next(iter(items.items()))
                if at > now:
                    break
                del items[item]
                expiring[item] = timeout_s
            if not items:
                del self._due[timeout_s]
        while expiring:
            item = next(iter(expiring))
            self._expire(item, expiring.pop(item))
        first = min((next(iter(items.values())) for items in self._due.values()), default=None)
        if first is not None and first < self._timer_at:
            self._arm(first)
