"""HTTP/2 on the public side of the HTTPS edge (ALPN h2), with the `h2` package (sans-IO).

Theory of operation. `H2Visitor` is the asyncio.Protocol of one terminated TLS connection that
negotiated h2. It feeds the bytes to an `h2.connection.H2Connection` and turns its events into
per-stream work: each request (HEADERS) starts one task (`h2stream.serve_stream`) that opens
one tunnel stream, writes the request to the local service as HTTP/1.1 and sends the response
back as HTTP/2. The protocol owns the connection state; stream tasks call back into it
(`send_*`, `wait_window`, `acknowledge`) and every call flushes `data_to_send()`.

Bounds and flow control:
- at most MAX_CONCURRENT_STREAMS streams at once (advertised; h2 refuses more);
- request bodies: each stream's receive window is INITIAL_WINDOW_BYTES and is credited only
  after the body bytes were written to the tunnel, so a stream buffers at most one window;
- response bodies: sent within the peer's flow-control windows; a stream with no window
  waits (`wait_window`), and while the transport's buffer is over its high-water mark every
  sender waits (`drain`), so the visitor's reading speed paces the local service;
- header blocks: MAX_HEADER_LIST_BYTES (advertised and enforced by h2's HPACK decoder).

A protocol error from the visitor ends the connection (GOAWAY from h2); a failure of one
stream resets that stream only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ..cluster.peers import visitor_of
from ..fdbudget import FDBudget
from ..vhost.access import OnAccess, RequestRecord
from ..vhost.listener import SHUTDOWN_GRACE_S
from ..vhost.routing import VhostRouter
from .upstreams import UpstreamPool

logger = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS: Final = 100
INITIAL_WINDOW_BYTES: Final = 256 * 1024  # per stream, request bodies
MAX_HEADER_LIST_BYTES: Final = 64 * 1024
WRITE_HIGH_BYTES: Final = 256 * 1024
WRITE_LOW_BYTES: Final = 64 * 1024
MAX_QUEUED_ITEMS: Final = 1024  # body pieces per stream; the window bounds their bytes
REFUSED_STREAM: Final = 0x7  # RFC 9113 error code: not processed, the client may retry


class StreamInput:
    """What the visitor sent on one stream after its HEADERS: body pieces, then the end."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "ended",
        "host",
        "items",
        "method",
        "path",
        "proxy",
        "reset",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, method: bytes, host: bytes, path: bytes) -> None:
        self.items: list[tuple[bytes, int]] = []  # (data, flow-controlled length)
        self.ended = False
        self.reset = False
        self.waiter: asyncio.Future[None] | None = None
        # For the access log and the latency histograms (RequestRecord), once routed:
        self.proxy = ""  # set when the request was routed to a proxy
        self.method = method
        self.host = host
        self.path = path.split(b"?", 1)[0]  # without the query string, which may hold secrets
        self.started = time.monotonic()
        self.status = 0  # the response's, once its head was sent
        self.bytes_in = 0  # body bytes towards the app
        self.bytes_out = 0  # body bytes back to the visitor

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class H2Visitor(asyncio.Protocol):
    """One h2 visitor connection. See the module docstring."""

    def __init__(
        self,
        router: VhostRouter,
        *,
        timeout_s: float,
        on_done: Callable[[H2Visitor], None] | None = None,
        pool: UpstreamPool | None = None,
        on_access: OnAccess | None = None,
        page_404: bytes | None = None,
    ) -> None:
        self.router = router
        self.timeout_s = timeout_s
        self.pool = pool  # idle keep-alive upstream streams, shared by the service's visitors
        self.on_access = on_access
        self.page_404 = page_404  # custom404Page, as the HTTP vhost serves it
        self.peer_allowed: Callable[[str], bool] | None = None  # the server's IP rules
        self._on_done = on_done
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.inputs: dict[int, StreamInput] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._window_waiters: list[asyncio.Future[None]] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._paused = False
        self.lost = False
        self._flush_pending = False  # a _flush_now is scheduled
        self._unflushed = 0  # body bytes queued in h2 since the last write (WRITE_LOW_BYTES)
        self.shutting_down = False
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_BYTES, low=WRITE_LOW_BYTES)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:  # HEADERS then DATA are separate writes: Nagle would hold the second one
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:  # the socket may already be dead; reads will say so
                logger.debug("TCP_NODELAY failed: %r", exc)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = visitor_of((str(peer[0]), int(peer[1]))) or (str(peer[0]), int(peer[1]))
        if self.peer_allowed is not None and not self.peer_allowed(self.peer[0]):
            self.transport.abort()  # allowIPs/denyIPs, as the vhosts: nothing is served
            return
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: INITIAL_WINDOW_BYTES,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self.conn.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # The visitor broke the protocol: h2 queued a GOAWAY; send it and hang up.
            logger.debug("h2: protocol error from %s: %s", self.peer[0], exc)
            self.flush()
            self.close()
            return
        for event in events:
            self._event(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for task in self.tasks.values():
            task.cancel()
        self._wake_all()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_done is not None:
            callback, self._on_done = self._on_done, None
            callback(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- events -------------------------------------------------------------------------------

    def _event(self, event: Any) -> None:
        from .h2stream import serve_stream  # the stream module imports this one

        if isinstance(event, h2.events.RequestReceived):
            stream_id = event.stream_id
            if self.shutting_down:
                self._reset(stream_id, REFUSED_STREAM)  # after our GOAWAY: safe to retry
                return
            pseudo = {k: v for k, v in event.headers or () if k[:1] == b":"}
            get = pseudo.get
            self.inputs[stream_id] = StreamInput(
                get(b":method", b""), get(b":authority", b""), get(b":path", b"")
            )
            if event.stream_ended is not None:
                self.inputs[stream_id].ended = True
            task = asyncio.get_running_loop().create_task(
                serve_stream(self, stream_id, list(event.headers or ()))
            )
            self.tasks[stream_id] = task
            task.add_done_callback(functools.partial(self._stream_done, stream_id))
        elif isinstance(event, h2.events.DataReceived):
            box = self.inputs.get(event.stream_id)
            if box is None or len(box.items) >= MAX_QUEUED_ITEMS:
                self._reset(event.stream_id)
                return
            box.items.append((event.data or b"", event.flow_controlled_length or 0))
            box.wake()
        elif isinstance(event, h2.events.StreamEnded):
            box = self.inputs.get(event.stream_id)
            if box is not None:
                box.ended = True
                box.wake()
        elif isinstance(event, h2.events.StreamReset):
            box = self.inputs.get(event.stream_id)
            if box is not None:
                box.reset = True
                box.wake()
            running = self.tasks.get(event.stream_id)
            if running is not None:
                running.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_windows()
        elif isinstance(event, h2.events.ConnectionTerminated):
            logger.debug("h2: %s sent GOAWAY (code %s)", self.peer[0], event.error_code)
            self.close()

    def _stream_done(self, stream_id: int, task: asyncio.Task[None]) -> None:
        self.tasks.pop(stream_id, None)
        box = self.inputs.pop(stream_id, None)
        if box is not None and box.proxy and self.on_access is not None:
            self.on_access(
                RequestRecord(
                    proxy=box.proxy,
                    peer=self.peer,
                    method=box.method.decode("latin-1"),
                    host=box.host.decode("latin-1"),
                    path=box.path.decode("latin-1"),
                    status=box.status,
                    seconds=time.monotonic() - box.started,
                    bytes_in=box.bytes_in,
                    bytes_out=box.bytes_out,
                )
            )
        if not task.cancelled() and task.exception() is not None:
            logger.error("h2 stream %d failed", stream_id, exc_info=task.exception())
            self._reset(stream_id)
        if self.shutting_down and not self.tasks:
            self.close()
        if self._on_done is not None and self.lost and not self.tasks:
            callback, self._on_done = self._on_done, None
            callback(self)

    # -- for stream tasks ---------------------------------------------------------------------

    def flush(self) -> None:
        """Send what h2 queued, at the end of this loop iteration: a response's HEADERS, DATA
        and END_STREAM (and other streams' frames of the same tick) leave in one write, so one
        TLS record and one send() instead of three."""
        if not self._flush_pending and self.transport is not None and not self.lost:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self._unflushed = 0
        data = self.conn.data_to_send()
        transport = self.transport
        if data and transport is not None and not self.lost and not transport.is_closing():
            transport.write(data)

    @property
    def usable(self) -> bool:
        """True while responses can still be sent (not lost, not closing)."""
        transport = self.transport
        return transport is not None and not self.lost and not transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self._flush_now()  # GOAWAY or a last response first
            self.transport.close()

    # The senders below raise ConnectionResetError once the visitor's connection or stream is
    # gone (GOAWAY, reset, closed): for a stream task that is the expected network end.

    def send_head(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False
    ) -> None:
        """Send a response head (`:status` first; trailers otherwise) and note the status."""
        box = self.inputs.get(stream_id)
        if box is not None and headers[0][0] == b":status":
            box.status = int(headers[0][1])
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.H2Error as exc:
            raise ConnectionResetError(f"the visitor's stream is gone: {exc}") from None
        self.flush()

    def send_body(self, stream_id: int, data: bytes) -> None:
        """Send body bytes the caller checked the windows for, and count them."""
        try:
            self.conn.send_data(stream_id, data)
        except h2.exceptions.H2Error as exc:
            raise ConnectionResetError(f"the visitor's stream is gone: {exc}") from None
        self._unflushed += len(data)
        if self._unflushed >= WRITE_LOW_BYTES:
            self._flush_now()  # bulk data goes out now, where the transport can push back
        else:
            self.flush()
        box = self.inputs.get(stream_id)
        if box is not None:
            box.bytes_out += len(data)

    def window(self, stream_id: int) -> int:
        """Bytes the stream may send now: its and the connection's window, one frame at most."""
        try:
            window = self.conn.local_flow_control_window(stream_id)
        except h2.exceptions.H2Error as exc:
            raise ConnectionResetError(f"the visitor's stream is gone: {exc}") from None
        return min(window, self.conn.max_outbound_frame_size)

    def end(self, stream_id: int) -> None:
        """End the response stream."""
        try:
            self.conn.end_stream(stream_id)
        except h2.exceptions.H2Error as exc:
            raise ConnectionResetError(f"the visitor's stream is gone: {exc}") from None
        self.flush()

    def shut_down(self) -> None:
        """Server shutdown: GOAWAY, let the running streams finish, then close."""
        self.shutting_down = True
        if self.lost:
            return
        try:
            self.conn.close_connection()
        except h2.exceptions.H2Error:
            self.close()  # no connection to say goodbye on
            return
        self.flush()
        if not self.tasks:
            self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _reset(self, stream_id: int, code: int = 0x2) -> None:
        try:
            self.conn.reset_stream(stream_id, error_code=code)
        except h2.exceptions.H2Error:
            return  # already closed: nothing to reset
        self.flush()

    def reset(self, stream_id: int) -> None:
        """Reset one stream (INTERNAL_ERROR) after a failure on its tunnel side."""
        self._reset(stream_id)

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Credit `length` consumed body bytes back to the visitor's window."""
        if length and not self.lost:
            try:
                self.conn.acknowledge_received_data(length, stream_id)
            except h2.exceptions.H2Error:
                return  # the stream is gone; its credit no longer matters
            self.flush()

    async def wait_window(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._window_waiters.append(waiter)
        await waiter

    async def drain(self) -> None:
        while self._paused and not self.lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_windows(self) -> None:
        for waiter in self._window_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._window_waiters.clear()

    def _wake_all(self) -> None:
        self._wake_windows()
        self.resume_writing()
        for box in self.inputs.values():
            box.wake()


class H2Service:
    """Owns every h2 visitor connection: the cap, and shutdown (close, then wait)."""

    def __init__(
        self,
        router: VhostRouter,
        *,
        timeout_s: float,
        max_connections: int,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        pool: UpstreamPool | None = None,
        on_access: OnAccess | None = None,
        custom_404_page: str | None = None,
    ) -> None:
        self._router = router
        self._shutdown_grace_s = shutdown_grace_s
        # Upstream keep-alive for h2 -> HTTP/1.1 (upstreams.py); None turns reuse off.
        self.pool = UpstreamPool() if pool is None else pool
        self.on_access = on_access  # the server's access log and latency histograms
        self._page_404 = custom_404_page.encode("utf-8") if custom_404_page is not None else None
        # The server's IP rules: a visitor it refuses is closed before any stream is served.
        self.peer_allowed: Callable[[str], bool] | None = None
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._visitors: set[H2Visitor] = set()
        self._closing = False
        self.refused_connections = 0
        self.fd_budget: FDBudget | None = None  # one descriptor per visitor, as the vhosts

    def _done(self, visitor: H2Visitor) -> None:
        self._visitors.discard(visitor)
        if self.fd_budget is not None:
            self.fd_budget.release()

    @property
    def connections(self) -> int:
        return len(self._visitors)

    def protocol(self) -> asyncio.Protocol:
        budget = self.fd_budget
        if (
            self._closing
            or len(self._visitors) >= self._max_connections
            or (budget is not None and not budget.try_acquire(asyncio.get_running_loop().time()))
        ):
            self.refused_connections += 1
            return _Refuse()
        visitor = H2Visitor(
            self._router,
            timeout_s=self._timeout_s,
            on_done=self._done,
            pool=self.pool,
            on_access=self.on_access,
            page_404=self._page_404,
        )
        visitor.peer_allowed = self.peer_allowed
        self._visitors.add(visitor)
        return visitor

    def close(self) -> None:
        """Stop: GOAWAY to every visitor; idle connections close now, busy ones when done."""
        self._closing = True
        self.pool.close()
        for visitor in list(self._visitors):
            visitor.shut_down()

    async def wait_closed(self) -> None:
        """Wait for the running streams, at most SHUTDOWN_GRACE_S, then abort what is left.

        The TLS close itself is not waited for: a visitor that never answers close_notify
        would hold shutdown for the transport's own ssl_shutdown_timeout (30 s)."""
        tasks = [task for visitor in self._visitors for task in visitor.tasks.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._shutdown_grace_s)
        for visitor in list(self._visitors):
            visitor.abort()  # connection_lost cancels any stream task still running
        tasks = [task for visitor in self._visitors for task in visitor.tasks.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
