"""Keep-alive for the HTTP/2 edge: idle upstream streams kept per route and reused.

Each h2 stream used to open its own tunnel stream, so every request cost a stream open, a
local connect in tunnelc and a TCP handshake with the app (the h2 bench's p99 of 460 ms).
Now an exchange that ended cleanly on a keep-alive HTTP/1.1 connection gives its tunnel
stream back (`put`), and the next request for the same route takes it (`take`).

Bounds and policy (the pool owns every stream it holds):
- at most `max_per_route` idle streams per route (MAX_IDLE_PER_ROUTE) and `max_total` in all
  (MAX_IDLE_TOTAL); past either, the oldest idle stream is closed;
- an idle stream is closed after `idle_timeout_s` (IDLE_TIMEOUT_S), shorter than the usual
  keep-alive timeouts of apps (nginx 75 s, Node 5 s is the exception: see the retry below);
- a stream whose app side already ended (at_eof: the app closed its idle connection, or the
  route's proxy went away and reset it) is never handed out;
- the newest idle stream is taken first (the least likely to have been closed by the app).

The race that remains, an app closing a connection just as a request is sent on it, is
answered by the caller (h2stream.py): a request that can be repeated is sent once more on a
fresh stream, as the HTTP/1.1 vhost does.

Routes are keys by identity: a route that is replaced (the client reconnected) gets a new
object, and the old one's streams are reset by its proxy, then dropped here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from ..vhost.routing import HTTPRoute
from ..vhost.upstream import ByteStream

logger = logging.getLogger(__name__)

MAX_IDLE_PER_ROUTE: Final = 256  # idle upstream streams kept per route
MAX_IDLE_TOTAL: Final = 1024  # idle upstream streams kept in all, per HTTPS edge
IDLE_TIMEOUT_S: Final = 15.0  # an idle stream is closed after this long


class _Idle:
    __slots__ = ("handle", "route", "stream")

    def __init__(self, route: HTTPRoute, stream: ByteStream) -> None:
        self.route = route
        self.stream = stream
        self.handle: asyncio.TimerHandle | None = None


class UpstreamPool:
    """Idle keep-alive upstream streams, per route. Sync `close()` drops them all."""

    def __init__(
        self,
        *,
        max_per_route: int = MAX_IDLE_PER_ROUTE,
        max_total: int = MAX_IDLE_TOTAL,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._max_per_route = max_per_route
        self._max_total = max_total
        self._idle_timeout_s = idle_timeout_s
        self._idle: dict[HTTPRoute, deque[_Idle]] = {}
        self._order: dict[_Idle, None] = {}  # every idle entry, oldest first
        self._closed = False
        self.reused = 0  # streams handed out again
        self.kept = 0  # streams given back and kept
        self.evicted = 0  # idle streams closed to stay within the bounds
        self.expired = 0  # idle streams closed after idle_timeout_s

    @property
    def idle(self) -> int:
        """Idle streams held now."""
        return len(self._order)

    def take(self, route: HTTPRoute) -> ByteStream | None:
        """An idle stream to `route` that still looks alive, or None."""
        entries = self._idle.get(route)
        while entries:
            entry = entries.pop()  # newest first
            self._forget(entry)
            if entry.stream.at_eof():
                entry.stream.abort()  # the app or the tunnel already ended it
                continue
            self.reused += 1
            return entry.stream
        return None

    def put(self, route: HTTPRoute, stream: ByteStream) -> None:
        """Keep a stream whose last exchange ended cleanly; close it if it cannot be kept."""
        if self._closed or stream.at_eof() or self._max_per_route <= 0:
            stream.close()
            return
        entries = self._idle.setdefault(route, deque())
        if len(entries) >= self._max_per_route:
            self._evict(entries[0])
        elif len(self._order) >= self._max_total:
            self._evict(next(iter(self._order)))
        entry = _Idle(route, stream)
        entry.handle = asyncio.get_running_loop().call_later(
            self._idle_timeout_s, self._expire, entry
        )
        self._idle.setdefault(route, entries).append(entry)
        self._order[entry] = None
        self.kept += 1

    def close(self) -> None:
        """Close every idle stream; later `put`s close theirs at once (idempotent)."""
        self._closed = True
        for entry in list(self._order):
            self._forget(entry)
            entry.stream.close()

    def _evict(self, entry: _Idle) -> None:
        self._remove(entry)
        entry.stream.close()
        self.evicted += 1

    def _expire(self, entry: _Idle) -> None:
        if entry not in self._order:
            return  # taken or evicted in the meantime (its timer was cancelled then)
        self._remove(entry)
        entry.stream.close()
        self.expired += 1

    def _remove(self, entry: _Idle) -> None:
        entries = self._idle.get(entry.route)
        if entries is not None:
            entries.remove(entry)
        self._forget(entry)

    def _forget(self, entry: _Idle) -> None:
        if entry.handle is not None:
            entry.handle.cancel()
        self._order.pop(entry, None)
        entries = self._idle.get(entry.route)
        if entries is not None and not entries:
            del self._idle[entry.route]
