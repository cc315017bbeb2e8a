"""Capture while the client is offline: parked http routes, and delivery of their requests.

When the session of a client ends (or tunneld shuts down), each of its http proxies that asked
for an offline policy (`offlineStatus` / `offlineCapture` in frpc.toml) is *parked*: its route
stays in the vhost router with an opener that answers from the policy (`vhost/offline.py`), so
the URL keeps answering and no one else can claim it. With capture, each request is stored in
SQLite (`offlinestore.py`), in arrival order. When the client logs in again and its proxy
registers under the same server-wide name, the route is unparked and the stored requests are
delivered to the client one by one, in order, each removed once the app answered it.

Bounds (per proxy, `offline.*` in frps.toml): `maxRequests` stored requests, `maxBytes` stored
bytes (a request that does not fit is answered 503 and not stored), `maxAge` seconds: older
requests are deleted and a proxy parked longer is unparked (its names are freed).

Parked routes are persisted too: a restarted tunneld parks them again at start (`restore`),
so the names keep answering from the fallback and storing until the client comes back.

Nothing here blocks the event loop: requests are stored through `asyncio.to_thread`, one
write at a time; parkings and unparkings are recorded in `_dirty` (latest state per proxy,
so bounded by the number of routes) and written in batches by one writer task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from protocol.aio.stream import StreamResetError

from .offlinestore import (
    DELIVERED_LATE_HEADER,
    OfflineLimits,
    OfflineStore,
    ParkedRecord,
    StoredRequest,
)
from .vhost.offline import OfflineByteStream, OfflinePolicy
from .vhost.routing import HTTPRoute, RouteError, VhostRouter
from .vhost.upstream import ByteStream, UpstreamError

if TYPE_CHECKING:
    from .config import ServerConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DELIVERED_LATE_HEADER",
    "OfflineLimits",
    "OfflineParking",
    "OfflineStore",
    "StoredRequest",
    "deliver_stored",
    "offline_note",
]

EXPIRY_INTERVAL_S: Final = 30.0
DELIVERY_READ_BYTES: Final = 64 * 1024
MAX_DELIVERY_ANSWER_BYTES: Final = 1024 * 1024  # read this much of an answer, then stop


def offline_note(policy: OfflinePolicy | None, limits: OfflineLimits | None) -> str:
    """What tunneld does for a proxy while its client is offline, in a visitor's words (the
    502 page says it; `limits` is None on a server without offline capture)."""
    if policy is None:
        return (
            "While this tunnel's client is offline, tunneld does not answer for it (404) and "
            "keeps no requests; its owner can set offlineStatus and offlineCapture in frpc.toml "
            "to have them answered and stored."
        )
    if limits is None:
        return "This server keeps no requests for offline tunnels (it has no HTTP vhost)."
    if not policy.capture:
        return (
            f"While this tunnel's client is offline, tunneld answers {policy.status} for it "
            "and keeps no requests."
        )
    return (
        f"While this tunnel's client is offline, tunneld answers {policy.status} and stores "
        f"each request (up to {limits.max_requests} requests, {limits.max_bytes} bytes, "
        f"{limits.max_age:g} s; 503 when full), delivering them in order when it reconnects."
    )


@dataclass(slots=True)
class _Parked:
    router: VhostRouter
    route: HTTPRoute
    since: float  # unix time


class OfflineParking:
    """Parked routes and the store, for the whole server (owned by `TunnelServer`)."""

    def __init__(self, store: OfflineStore, limits: OfflineLimits) -> None:
        self.store = store
        self.limits = limits
        # Set when tunneld shuts down: its proxies are parked (and kept) like offline ones.
        self.shutting_down = False
        self._parked: dict[str, _Parked] = {}
        self._lock = asyncio.Lock()  # one store operation at a time
        self._expiry: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # proxy name -> its latest parked state to write (None: delete); one entry per proxy.
        self._dirty: dict[str, ParkedRecord | None] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        self._expiry = asyncio.create_task(self._expire_forever(), name="offline-expiry")
        self._writer = asyncio.create_task(self._write_forever(), name="offline-writer")

    async def restore(self, router: VhostRouter) -> int:
        """Park again the routes a previous run left parked; returns how many."""
        if self.store.empty:
            return 0  # no file: no thread, no sqlite3 (offlinestore.py)
        async with self._lock:
            records, bad = await asyncio.to_thread(self.store.load_parked)
        for key, problem in bad:
            logger.warning("tunneld: [proxy=%s] parked route unreadable: %s", key, problem)
            self._mark(key, None)
        cutoff = time.time() - self.limits.max_age
        restored = 0
        for record in records:
            if record.since < cutoff:
                self._mark(record.key, None)
                continue
            try:
                route = record.build(self._opener(record.key, record.policy))
            except (TypeError, ValueError, RouteError) as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                logger.warning("tunneld: [proxy=%s] parked route dropped: %s", record.key, reason)
                self._mark(record.key, None)
                continue
            if self._install(record.key, router, route, record.policy, record.since):
                restored += 1
            else:
                self._mark(record.key, None)
        if restored:
            logger.info("tunneld: %d parked routes of offline clients restored", restored)
        return restored

    def _opener(
        self, key: str, policy: OfflinePolicy
    ) -> Callable[[tuple[str, int]], Awaitable[ByteStream]]:
        async def store(data: bytes) -> bool:
            async with self._lock:
                return await asyncio.to_thread(self.store.add, key, data, self.limits, time.time())

        async def opener(src: tuple[str, int]) -> ByteStream:
            return OfflineByteStream(policy, store, self.limits.max_bytes)

        return opener

    def park(self, key: str, router: VhostRouter, route: HTTPRoute, policy: OfflinePolicy) -> None:
        """Keep `route`'s names answering from `policy` (the route was just removed).

        `key` is the proxy's server-wide name (user-qualified): a client that reconnects may
        have a new client id, but it registers the same proxy name.
        """
        parked = dataclasses.replace(route, opener=self._opener(key, policy))
        since = time.time()
        if self._install(key, router, parked, policy, since):
            self._mark(key, ParkedRecord.of(key, since, parked, policy))

    def _install(
        self, key: str, router: VhostRouter, route: HTTPRoute, policy: OfflinePolicy, since: float
    ) -> bool:
        try:
            router.add(route)
        except RouteError as exc:  # the names were claimed meanwhile: nothing to park
            logger.info("tunneld: [proxy=%s] not parked: %s", key, exc.reason)
            return False
        self._parked[key] = _Parked(router, route, since)
        what = "answers and stores requests" if policy.capture else "answers"
        logger.info(
            "tunneld: [proxy=%s] client offline: tunneld %s with %d", key, what, policy.status
        )
        return True

    def unpark(self, key: str) -> None:
        parked = self._parked.pop(key, None)
        if parked is not None:
            parked.router.remove(parked.route.proxy_key)
            self._mark(key, None)

    def _mark(self, key: str, record: ParkedRecord | None) -> None:
        self._dirty[key] = record
        self._wake.set()

    async def _write_forever(self) -> None:
        """Write the parked-route changes in batches until close() asks to stop."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._dirty = self._dirty, {}
            if self.store.empty and all(record is None for record in batch.values()):
                batch = {}  # unparking what no file holds: nothing to write
            if batch:
                try:
                    async with self._lock:
                        await asyncio.to_thread(self.store.save_parked, batch)
                except Exception:  # a full disk must not end tunneld; the routes stay in memory
                    logger.exception("tunneld: cannot record %d parked routes", len(batch))
            if self._stopping and not self._dirty:
                return

    async def pending(self, proxy_key: str) -> list[StoredRequest]:
        if self.store.empty:
            return []
        async with self._lock:
            since = time.time() - self.limits.max_age
            return await asyncio.to_thread(self.store.pending, proxy_key, since)

    async def remove(self, request_id: int) -> None:
        async with self._lock:
            await asyncio.to_thread(self.store.remove, request_id)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            cutoff = time.time() - self.limits.max_age
            for key, parked in list(self._parked.items()):
                if parked.since < cutoff:
                    logger.info("tunneld: [proxy=%s] offline longer than maxAge: unparked", key)
                    self.unpark(key)

    def close(self) -> None:
        """Take the parked routes out of the routers; they stay recorded for the next start."""
        for parked in self._parked.values():
            parked.router.remove(parked.route.proxy_key)
        self._parked.clear()
        if self._expiry is not None:
            self._expiry.cancel()
        self._stopping = True
        self._wake.set()

    async def wait_closed(self) -> None:
        if self._expiry is not None:
            # The task was cancelled in close(); gather collects that without re-raising.
            await asyncio.gather(self._expiry, return_exceptions=True)
        if self._writer is not None:
            await self._writer  # it writes what is left, then returns
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
