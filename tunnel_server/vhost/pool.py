"""A bounded keep-alive pool of idle upstream streams, reused across visitor connections.

Opening an upstream costs a stream open through the tunnel and a local dial on the client,
so when a visitor connection ends while its upstream is still good, the stream is kept here
and the next visitor connection for the same key takes it instead of opening a new one.

API (small on purpose; the HTTP/1 vhost uses it, and the HTTPS edge's HTTP/2 service through
edge/upstreams.py):

    pool = KeepAlivePool(discard=lambda item: item.close())
    item = pool.take(key)        # an idle item for `key`, or None: open a new one
    kept = pool.put(key, item)   # give it back after a clean exchange; False: not kept
                                 # (then the caller closes it itself)
    pool.close()                 # at shutdown: discard every idle item

The caller decides what may be pooled: only an item whose last exchange ended cleanly and
whose response allowed reuse (never after an error, an upgrade or `Connection: close`). The
key must hold everything that makes a stream fit for a visitor: the vhost uses the route and
the visitor's IP address, since a stream carries the visitor's address to the client (PROXY
protocol, logs) and was admitted by the IP rules for that address.

Bounds: POOL_IDLE_PER_KEY idle items per key and POOL_IDLE_TOTAL in all (a put beyond either
discards the oldest idle item); an item idle for POOL_IDLE_TIMEOUT_S is discarded by a timer.
The timeout is below common app keep-alive timeouts (Node's 5 s), and a stream that died while
idle is still caught by the vhost's retry of idempotent requests.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

POOL_IDLE_PER_KEY: Final = 8  # idle upstreams kept per key (route and visitor address)
POOL_IDLE_TOTAL: Final = 256  # idle upstreams kept by one listener in all
POOL_IDLE_TIMEOUT_S: Final = 4.0  # an idle upstream is closed after this long

T = TypeVar("T")


class _Idle(Generic[T]):
    __slots__ = ("item", "key", "timer")

    def __init__(self, key: Hashable, item: T) -> None:
        self.key = key
        self.item = item
        self.timer: asyncio.TimerHandle | None = None


class KeepAlivePool(Generic[T]):
    """Idle items by key, newest reused first. See the module docstring."""

    def __init__(
        self,
        discard: Callable[[T], None],
        *,
        per_key: int = POOL_IDLE_PER_KEY,
        total: int = POOL_IDLE_TOTAL,
        idle_timeout_s: float = POOL_IDLE_TIMEOUT_S,
    ) -> None:
        self._discard = discard
        self.per_key = per_key
        self.total = total
        self.idle_timeout_s = idle_timeout_s
        self._by_key: dict[Hashable, deque[_Idle[T]]] = {}
        self._all: OrderedDict[int, _Idle[T]] = OrderedDict()  # oldest first, by id(entry)
        self._closed = False
        # Counters for tests and metrics: kept - reused - evicted - expired == len(self).
        self.kept = 0  # puts that kept their item
        self.reused = 0  # takes that found an idle item
        self.evicted = 0  # idle items discarded to stay within the bounds (or at close)
        self.expired = 0  # idle items discarded after idle_timeout_s

    def __len__(self) -> int:
        return len(self._all)

    def take(self, key: Hashable) -> T | None:
        """The most recently pooled idle item for `key`, or None."""
        entries = self._by_key.get(key)
        if not entries:
            return None
        entry = entries.pop()
        self._forget(entry, entries)
        self.reused += 1
        return entry.item

    def put(self, key: Hashable, item: T) -> bool:
        """Keep `item` idle for `key`; False if the pool is closed (the caller closes it)."""
        if self._closed or self.per_key <= 0 or self.total <= 0:
            return False
        entries = self._by_key.setdefault(key, deque())
        if len(entries) >= self.per_key:
            self._drop(entries[0])
        if len(self._all) >= self.total:
            self._drop(next(iter(self._all.values())))
        entry: _Idle[T] = _Idle(key, item)
        entry.timer = asyncio.get_running_loop().call_later(
            self.idle_timeout_s, self._drop, entry, True
        )
        entries = self._by_key.setdefault(key, entries)  # _drop may have removed the deque
        entries.append(entry)
        self._all[id(entry)] = entry
        self.kept += 1
        return True

    def _forget(self, entry: _Idle[T], entries: deque[_Idle[T]]) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        self._all.pop(id(entry), None)
        if not entries:
            self._by_key.pop(entry.key, None)

    def _drop(self, entry: _Idle[T], expired: bool = False) -> None:
        """Discard one idle item (too old, or pushed out by the bounds)."""
        entries = self._by_key.get(entry.key)
        if entries is None or entry not in entries:
            return
        entries.remove(entry)
        self._forget(entry, entries)
        if expired:
            self.expired += 1
        else:
            self.evicted += 1
        self._discard(entry.item)

    def close(self) -> None:
        """Discard every idle item; later puts are refused. Idempotent."""
        self._closed = True
        for entry in list(self._all.values()):
            self._drop(entry)
