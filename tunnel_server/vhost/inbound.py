"""The visitor's side of a vhost connection: an asyncio.Protocol with a bounded item queue.

Theory of operation. `data_received` hands bytes to a *feeder*: raw mode queues them as they
are; HTTP mode (see `request.py`) parses them and queues request heads, body pieces and
end-of-message markers. One coroutine per connection (owned by the listener) consumes the
queue with `pop()` and `wait()` and writes back with `write()`/`drain()`.

Bounds and backpressure:
- the queue counts the bytes it holds, plus ITEM_OVERHEAD_BYTES per item; above
  QUEUE_HIGH_BYTES the transport stops reading, and reading resumes once the consumer has
  taken it below QUEUE_LOW_BYTES. A read is fed in FEED_SLICE_BYTES slices, and what is left
  of it once the queue is over budget is held raw (`_held`) and fed, from a callback, when the
  consumer takes the queue down; so one slice, not one read, can land past the budget. What
  cannot amplify is not sliced: raw bytes after an upgrade (one item per read), and the rest
  of a Content-Length body (`body_bytes_left`, one item per span), which can land past the
  budget by at most one read of body bytes;
- writes go to the transport, whose buffer is limited to WRITE_HIGH_BYTES; `drain()` waits
  while the transport has paused us.

The consumer never blocks the protocol: every method here is synchronous except `wait()` and
`drain()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from protocol.aio import sockopts

from ..cluster.peers import visitor_of

if TYPE_CHECKING:
    from .routing import HTTPRoute

logger = logging.getLogger(__name__)

QUEUE_HIGH_BYTES: Final = 256 * 1024
QUEUE_LOW_BYTES: Final = 64 * 1024
WRITE_HIGH_BYTES: Final = 256 * 1024
WRITE_LOW_BYTES: Final = 64 * 1024
# Each queued item also counts this much, so a flood of tiny items (1-byte chunks, empty
# pipelined requests) pauses reading as surely as bulk data does.
ITEM_OVERHEAD_BYTES: Final = 64
# Input is fed in slices of at most this many bytes, and feeding stops (the rest of the read
# held raw, the transport paused) once the queue is over QUEUE_HIGH_BYTES: one 256 KiB read of
# tiny pipelined requests would otherwise queue thousands of parsed heads at once.
FEED_SLICE_BYTES: Final = 16 * 1024


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


EOF: Final = _Marker("EOF")  # the visitor half-closed
LOST: Final = _Marker("LOST")  # the connection is gone


class InboundProtocol(asyncio.Protocol):
    """One visitor connection. See the module docstring."""

    def __init__(self, on_made: Callable[[InboundProtocol], None]) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.feeder: Callable[[bytes], None] = self.push_bytes
        self.on_lost: Callable[[], None] | None = None  # e.g. abort the upstream stream
        self.on_notify: Callable[[], None] | None = None  # a callback consumer (lane.py)
        self._items: deque[object] = deque()
        self._sizes: deque[int] = deque()
        self._queued = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self.lost = False
        self.relayed = False  # relayed by another node of the cluster (cluster/peers.py)
        self.pushed = 0  # items ever queued (a mark for retract_since)
        self.bytes_received = 0
        self.bytes_sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held = b""  # the rest of a read, not fed while the queue was over budget
        # Bytes of a Content-Length body still to come (RequestReader keeps it): fed in one
        # piece, since a body span queues as one item whatever its size.
        self.body_bytes_left = 0
        # The headers the vhost appends to this connection's raw request heads, made for one
        # (route rules, Host) pair: http_proxy.prepare keeps and reuses them.
        self.head_tail: tuple[object, bytes, bytes] | None = None
        # The last request checked and routed by the exact-name table: (router version,
        # Host, target, host, path, route); http_proxy.prepare reuses it for the same Host
        # and target while the router is unchanged.
        self.route_cache: tuple[int, bytes, bytes, str, str, HTTPRoute] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once (Python 3.11's lookup makes a getpid call)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sockopts.set_nodelay(transport)
        # Abortive until we close on purpose: if tunneld dies, the visitor sees RST, not a
        # response that merely stopped.
        sockopts.set_abortive(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
            visitor = visitor_of(self.peer)
            if visitor is not None:  # another node relayed this visitor's connection
                self.peer, self.relayed = visitor, True
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_BYTES, low=WRITE_LOW_BYTES)
        self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._held:  # a read that was already on its way when reading paused
            self._held += data
            return
        # Raw bytes (after an upgrade) queue one item per read whatever its size: slicing them
        # would only multiply the items and copies of a bulk transfer.
        if len(data) <= FEED_SLICE_BYTES or self.feeder == self.push_bytes:
            self.feeder(data)
        else:
            self._feed_slices(data)

    def _feed_slices(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if self._queued > QUEUE_HIGH_BYTES and not self.lost:
                self._held = bytes(view[pos:])  # fed when the consumer takes the queue down
                return
            size = max(FEED_SLICE_BYTES, self.body_bytes_left)
            self.feeder(data if pos == 0 and size >= end else bytes(view[pos : pos + size]))
            pos += size

    def _feed_held(self) -> None:
        held, self._held = self._held, b""
        if held and not self.lost:
            self._feed_slices(held)
        if not self._held and not self._reading_paused and not self.lost:
            transport = self.transport
            assert transport is not None
            if not transport.is_closing():
                transport.resume_reading()

    def eof_received(self) -> bool:
        self.push(EOF, 0)
        return True  # keep the transport open: the response may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.push(LOST, 0)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_lost is not None:
            callback, self.on_lost = self.on_lost, None
            callback()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- producer side (feeders) ---------------------------------------------------------

    def push(self, item: object, size: int) -> None:
        """Queue an item that accounts for `size` bytes of the queue's budget."""
        size += ITEM_OVERHEAD_BYTES
        self.pushed += 1
        self._items.append(item)
        self._sizes.append(size)
        self._queued += size
        if self._queued > QUEUE_HIGH_BYTES and not self._reading_paused and not self.lost:
            self._reading_paused = True
            transport = self.transport
            assert transport is not None
            if not transport.is_closing():
                transport.pause_reading()
        self.notify()

    def retract_since(self, mark: int) -> bool:
        """Drop the items queued after `pushed` was `mark`, if none was taken yet; True if so."""
        count = self.pushed - mark
        if count > len(self._items):
            return False
        for _ in range(count):
            self._items.pop()
            self._queued -= self._sizes.pop()
        self.pushed = mark
        return True

    def push_bytes(self, data: bytes) -> None:
        """The raw feeder: queue bytes as they are."""
        self.push(data, len(data))

    def discard(self, data: bytes) -> None:
        """A feeder that drops input (after a fatal parse error, while the error is sent)."""

    def notify(self) -> None:
        """Wake the consumer without queueing anything (e.g. a request head has begun)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_notify is not None:
            self.on_notify()

    # --- consumer side -------------------------------------------------------------------

    def pop(self) -> object | None:
        """The next item, or None when the queue is empty."""
        if not self._items:
            return None
        self._queued -= self._sizes.popleft()
        if self._reading_paused and self._queued <= QUEUE_LOW_BYTES and not self.lost:
            self._reading_paused = False
            if self._held:  # fed as if it were a new read (never inside the consumer's pop)
                self.loop.call_soon(self._feed_held)
            else:
                transport = self.transport
                assert transport is not None
                if not transport.is_closing():
                    transport.resume_reading()
        return self._items.popleft()

    @property
    def queued_bytes(self) -> int:
        """Bytes the queue holds now (bounded by QUEUE_HIGH_BYTES plus one read)."""
        return self._queued

    @property
    def buffered_bytes(self) -> int:
        """Queued input plus the transport's unsent output."""
        transport = self.transport
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        return self._queued + unsent

    def peek(self) -> object | None:
        return self._items[0] if self._items else None

    async def wait(self, deadline: float | None) -> bool:
        """Wait for an item or a notify(); False if the loop time reached `deadline` first."""
        if self._items:
            return True
        assert self._waiter is None, "one consumer waits at a time"
        loop = self.loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return True

    def write(self, data: bytes) -> None:
        if self.lost:
            return
        assert self.transport is not None
        self.bytes_sent += len(data)
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if len(parts) == 1:
            self.write(parts[0])
        elif parts:
            self.write(b"".join(parts))

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused and not self.lost

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._writing_paused and not self.lost:
            waiter = self._drain_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not self.lost and not transport.is_closing():
            if transport.can_write_eof():
                transport.write_eof()

    def close(self) -> None:
        """Close after flushing what was written (idempotent)."""
        if self.transport is not None:
            sockopts.graceful_close(self.transport)

    def abort(self) -> None:
        """Reset the connection, dropping unsent data (idempotent)."""
        if self.transport is not None:
            sockopts.reset(self.transport)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
