"""Capture while the client is offline: parked http routes and the store of their requests.

When the session of a client ends, each of its http proxies that asked for an offline policy
(`offlineStatus` / `offlineCapture` in frpc.toml) is *parked*: its route stays in the vhost
router with an opener that answers from the policy (`vhost/offline.py`), so the URL keeps
answering and no one else can claim it. With capture, each request is stored in SQLite, in
arrival order. When the client logs in again and its proxy registers under the same key
(client id / proxy name), the route is unparked and the stored requests are delivered to the
client one by one, in order, each removed once the app answered it.

Bounds (per proxy, `offline.*` in frps.toml): `maxRequests` stored requests, `maxBytes` stored
bytes (a request that does not fit is answered 503 and not stored), `maxAge` seconds: older
requests are deleted and a proxy parked longer is unparked (its names are freed). Parked
routes live in memory; stored requests survive a tunneld restart and are delivered when the
client next registers the proxy.

The store is written off the event loop (`asyncio.to_thread`), one write at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.aio.stream import StreamResetError

from .vhost.offline import OfflineByteStream, OfflinePolicy
from .vhost.routing import HTTPRoute, RouteError, VhostRouter
from .vhost.upstream import ByteStream, UpstreamError

if TYPE_CHECKING:
    from .config import ServerConfig

logger = logging.getLogger(__name__)

DELIVERED_LATE_HEADER: Final = "X-Tunnelkit-Delivered-Late"  # its value: when tunneld got it
EXPIRY_INTERVAL_S: Final = 30.0
DELIVERY_READ_BYTES: Final = 64 * 1024
MAX_DELIVERY_ANSWER_BYTES: Final = 1024 * 1024  # read this much of an answer, then stop
_CONNECTION: Final = re.compile(rb"\r\nconnection:[^\r\n]*", re.IGNORECASE)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stored (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    proxy_key TEXT NOT NULL,
    received_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS stored_proxy ON stored (proxy_key, id);
"""


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    max_requests: int  # per proxy
    max_bytes: int  # per proxy
    max_age: float  # seconds


@dataclass(frozen=True, slots=True)
class StoredRequest:
    id: int
    received_at: float
    data: bytes

    def for_delivery(self) -> bytes:
        """The request as stored, marked delivered late and Connection: close (one stream,
        one request: the client's app closes after answering)."""
        head_end = self.data.find(b"\r\n\r\n")
        head, rest = self.data[:head_end], self.data[head_end:]
        head = _CONNECTION.sub(b"", head)
        line_end = head.find(b"\r\n")
        line_end = len(head) if line_end < 0 else line_end
        extra = f"\r\n{DELIVERED_LATE_HEADER}: {self.received_at:.3f}\r\nConnection: close"
        return head[:line_end] + extra.encode("ascii") + head[line_end:] + rest


class OfflineStore:
    """The SQLite file of stored requests (blocking; called through `asyncio.to_thread`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)

    def add(self, proxy_key: str, data: bytes, limits: OfflineLimits, now: float) -> bool:
        """Store one request unless it would break the proxy's limits."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM stored WHERE received_at < ?", (now - limits.max_age,))
            count, size = db.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM stored WHERE proxy_key = ?",
                (proxy_key,),
            ).fetchone()
            ok = count < limits.max_requests and size + len(data) <= limits.max_bytes
            if ok:
                db.execute(
                    "INSERT INTO stored (proxy_key, received_at, data) VALUES (?, ?, ?)",
                    (proxy_key, now, data),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return bool(ok)

    def pending(self, proxy_key: str, min_received_at: float) -> list[StoredRequest]:
        rows = self._db.execute(
            "SELECT id, received_at, data FROM stored WHERE proxy_key = ? AND received_at >= ? "
            "ORDER BY id",
            (proxy_key, min_received_at),
        ).fetchall()
        return [StoredRequest(row[0], row[1], bytes(row[2])) for row in rows]

    def remove(self, request_id: int) -> None:
        self._db.execute("DELETE FROM stored WHERE id = ?", (request_id,))

    def close(self) -> None:
        self._db.close()


@dataclass(slots=True)
class _Parked:
    router: VhostRouter
    route: HTTPRoute
    since: float


class OfflineParking:
    """Parked routes and the store, for the whole server (owned by `TunnelServer`)."""

    def __init__(self, store: OfflineStore, limits: OfflineLimits) -> None:
        self.store = store
        self.limits = limits
        self._parked: dict[str, _Parked] = {}
        self._lock = asyncio.Lock()  # one store operation at a time
        self._expiry: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._expiry = asyncio.create_task(self._expire_forever(), name="offline-expiry")

    def park(self, key: str, router: VhostRouter, route: HTTPRoute, policy: OfflinePolicy) -> None:
        """Keep `route`'s names answering from `policy` (the route was just removed).

        `key` is the proxy's server-wide name (user-qualified): a client that reconnects may
        have a new client id, but it registers the same proxy name.
        """

        async def store(data: bytes) -> bool:
            async with self._lock:
                return await asyncio.to_thread(self.store.add, key, data, self.limits, time.time())

        async def opener(src: tuple[str, int]) -> ByteStream:
            return OfflineByteStream(policy, store, self.limits.max_bytes)

        parked = dataclasses.replace(route, opener=opener)
        try:
            router.add(parked)
        except RouteError as exc:  # the names were claimed meanwhile: nothing to park
            logger.info("tunneld: [proxy=%s] not parked: %s", key, exc.reason)
            return
        self._parked[key] = _Parked(router, parked, time.monotonic())
        what = "answers and stores requests" if policy.capture else "answers"
        logger.info(
            "tunneld: [proxy=%s] client offline: tunneld %s with %d", key, what, policy.status
        )

    def unpark(self, key: str) -> None:
        parked = self._parked.pop(key, None)
        if parked is not None:
            parked.router.remove(parked.route.proxy_key)

    async def pending(self, proxy_key: str) -> list[StoredRequest]:
        async with self._lock:
            since = time.time() - self.limits.max_age
            return await asyncio.to_thread(self.store.pending, proxy_key, since)

    async def remove(self, request_id: int) -> None:
        async with self._lock:
            await asyncio.to_thread(self.store.remove, request_id)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            cutoff = time.monotonic() - self.limits.max_age
            for key, parked in list(self._parked.items()):
                if parked.since < cutoff:
                    logger.info("tunneld: [proxy=%s] offline longer than maxAge: unparked", key)
                    self.unpark(key)

    def close(self) -> None:
        for key in list(self._parked):
            self.unpark(key)
        if self._expiry is not None:
            self._expiry.cancel()

    async def wait_closed(self) -> None:
        if self._expiry is not None:
            # The task was cancelled in close(); gather collects that without re-raising.
            await asyncio.gather(self._expiry, return_exceptions=True)
        self.store.close()


async def deliver_stored(
    offline: OfflineParking,
    proxy_key: str,
    opener: Callable[[tuple[str, int]], Awaitable[ByteStream]],
    config: ServerConfig,
) -> None:
    """Deliver `proxy_key`'s stored requests to its client, oldest first, one at a time.

    Each goes on a stream of its own (marked Connection: close); it is removed from the store
    once the app's answer began to arrive. The first failure stops the delivery: the rest stay
    stored for the next time the client registers the proxy.
    """
    pending = await offline.pending(proxy_key)
    if not pending:
        return
    logger.info(
        "tunneld: [proxy=%s] delivering %d requests stored while the client was offline",
        proxy_key,
        len(pending),
    )
    delivered = 0
    for stored in pending:
        try:
            async with asyncio.timeout(config.vhost_http_timeout):
                stream = await opener(("tunneld-offline-store", 0))
                try:
                    await stream.write(stored.for_delivery())
                    answered = await _drain_answer(stream)
                finally:
                    stream.close()
        except (UpstreamError, ConnectionError, TimeoutError, StreamResetError) as exc:
            logger.warning(
                "tunneld: [proxy=%s] delivery of stored request %d failed (%s); %d left stored",
                proxy_key,
                stored.id,
                getattr(exc, "reason", None) or exc or type(exc).__name__,
                len(pending) - delivered,
            )
            return
        if not answered:
            logger.warning(
                "tunneld: [proxy=%s] the app closed without answering stored request %d; "
                "%d left stored",
                proxy_key,
                stored.id,
                len(pending) - delivered,
            )
            return
        await offline.remove(stored.id)
        delivered += 1
    logger.info("tunneld: [proxy=%s] delivered %d stored requests", proxy_key, delivered)


async def _drain_answer(stream: ByteStream) -> bool:
    """Read the app's answer to the end (bounded by the caller's timeout); True if any came."""
    got = 0
    while True:
        chunk = await stream.read(DELIVERY_READ_BYTES)
        if not chunk:
            return got > 0
        got += len(chunk)
        if got > MAX_DELIVERY_ANSWER_BYTES:
            return True  # answered; the rest of a large answer is not needed
