"""Keep-alive for the HTTP/2 edge: idle upstream streams kept per route and reused.

Each h2 stream used to open its own tunnel stream, so every request cost a stream open, a
local connect in tunnelc and a TCP handshake with the app (the h2 bench's p99 of 460 ms).
Now an exchange that ended cleanly on a keep-alive HTTP/1.1 connection gives its tunnel
stream back (`put`), and the next request for the same route takes it (`take`).

The pool is the vhost's KeepAlivePool (vhost/pool.py), keyed by route, with the edge's own
bounds and two rules for streams. Bounds and policy (the pool owns every stream it holds):
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

from collections.abc import Hashable
from typing import Final

from ..vhost.pool import KeepAlivePool
from ..vhost.upstream import ByteStream

MAX_IDLE_PER_ROUTE: Final = 256  # idle upstream streams kept per route
MAX_IDLE_TOTAL: Final = 1024  # idle upstream streams kept in all, per HTTPS edge
IDLE_TIMEOUT_S: Final = 15.0  # an idle stream is closed after this long


def _close(stream: ByteStream) -> None:
    stream.close()


class UpstreamPool(KeepAlivePool[ByteStream]):
    """Idle keep-alive upstream streams, per route. Sync `close()` closes them all.

    Unlike its base, `put` closes a stream it does not keep (the caller lets go of it either
    way), and `take` never hands out a stream whose app side already ended.
    """

    def __init__(
        self,
        *,
        max_per_route: int = MAX_IDLE_PER_ROUTE,
        max_total: int = MAX_IDLE_TOTAL,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        super().__init__(
            _close, per_key=max_per_route, total=max_total, idle_timeout_s=idle_timeout_s
        )

    @property
    def idle(self) -> int:
        """Idle streams held now."""
        return len(self)

    def take(self, key: Hashable) -> ByteStream | None:
        """An idle stream to the route `key` that still looks alive, or None."""
        while (stream := super().take(key)) is not None:
            if not stream.at_eof():
                return stream
            stream.abort()  # the app or the tunnel already ended it
        return None

    def put(self, key: Hashable, item: ByteStream) -> bool:
        """Keep a stream whose last exchange ended cleanly; close it if it cannot be kept."""
        if not item.at_eof() and super().put(key, item):
            return True
        item.close()
        return False
