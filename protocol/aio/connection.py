"""MuxSession: drives a sans-IO MuxConnection from an asyncio transport.

The pump (docs/architecture.md, "The pump")
--------------------------------------------
Every entry point ends in one step, `transmit()`, as aioquic's QuicConnectionProtocol does:
drain the core's events and hand each to its stream or handler, write the core's output to
the transport, and re-arm the one keepalive timer. The entry points are the transport's
callbacks (`connection_made`, `buffer_updated`, `eof_received`, `connection_lost`), the timer,
and `close()`; each runs `transmit()` itself.

Commands (a stream's `send_data`, `end_stream`, `reset_stream`, `acknowledge`,
`accept_stream`, and the application's `open_stream`, `send_message`, `send_datagram`,
`go_away`) only change the core and ask for a transmit on the next loop iteration, so small
frames coalesce into one write. A command never drains events: a stream's call cannot run
another stream's callbacks under it. Calls go one way each: commands down into the core,
events up to the streams through their public `StreamEvents` interface.

Bounds: the core's event queue holds at most `MAX_PENDING_EVENTS` (protocol/mux.py; the rest
of a read waits in its decoder until the queue drains). The core's output list is written to
the transport as soon as a command takes it past `MAX_PENDING_OUTPUT_BYTES`, so it holds at
most that plus one command's frames; from there the transport's high-water mark pauses every
attached local socket (backpressure) until it drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, cast

from ..errors import ErrorCode, LocalProtocolError
from ..events import (
    ConnectionTerminated,
    DatagramReceived,
    DataReceived,
    Event,
    GoAwayReceived,
    MessageReceived,
    PingAcknowledged,
    SendWindowOpened,
    StreamAccepted,
    StreamClosed,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ..messages import Message, StreamHeader, VisitorOpen
from ..mux import MuxConnection, Role
from ..names import peer_text
from ..settings import MuxSettings
from . import sockopts
from .deadlines import AcceptDeadlines
from .stream import MuxStream

logger = logging.getLogger(__name__)

# The connection's transport pauses local readers above this many buffered bytes.
CONN_WRITE_HIGH_WATER_BYTES: Final = 4 * 1024 * 1024
CONN_WRITE_LOW_WATER_BYTES: Final = 1024 * 1024
# Control messages received but not yet taken by the application; more is a protocol abuse.
MAX_QUEUED_MESSAGES: Final = 1024
# Output the core may hold between transmits, in bytes. A command that takes it past this
# hands it to the transport at once (policy: flush, then the transport's high water pauses
# the producers), so the core's output list holds at most this plus one command's frames.
MAX_PENDING_OUTPUT_BYTES: Final = 1024 * 1024
# Output chunks up to this total are joined into one write (one TLS record burst).
_JOIN_LIMIT_BYTES: Final = 256 * 1024
# The longest a held ACK waits for its stream's first frame (accept_stream(hold_ack=True)).
ACK_DELAY_S: Final = 0.01


class SessionClosedError(ConnectionError):
    """The session ended; `code` and `reason` say why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


StreamHandler = Callable[[MuxStream], None]
DatagramHandler = Callable[[int, bytes], None]


class MuxSession(asyncio.BufferedProtocol):
    """The asyncio protocol of the mux link, and the application's handle on it."""

    def __init__(
        self,
        role: Role,
        settings: MuxSettings | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.mux = MuxConnection(role, settings, now=self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.peername: tuple[str, int] | None = None
        self.on_stream: StreamHandler | None = None
        self.on_datagram: DatagramHandler | None = None
        self.on_go_away: Callable[[int, str], None] | None = None
        # Messages this returns True for are handled at once, in order with the frames around
        # them (UDP flow messages must be seen before the datagrams that follow them).
        self.message_filter: Callable[[Message], bool] | None = None
        self._idle_waiter: asyncio.Future[None] | None = None
        self._streams: dict[int, MuxStream] = {}
        self._messages: deque[Message] | None = None  # made on the first unread message
        self._message_waiter: asyncio.Future[None] | None = None
        self._transmit_scheduled = False
        self._in_transmit = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ack_timer: asyncio.TimerHandle | None = None  # sends held ACKs (ACK_DELAY_S)
        # Streams we opened that wait for the peer's ACK, swept by one timer.
        self.accept_deadlines = AcceptDeadlines[MuxStream](self.loop, MuxStream.accept_expired)
        self.writing_paused = False
        self._connected: asyncio.Future[None] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.rtt_s: float | None = None
        # Control messages held for next_message(); more is the peer's protocol abuse.
        self.message_limit = MAX_QUEUED_MESSAGES

    # -- asyncio.BufferedProtocol: entry points, each ending in transmit() ---------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(CONN_WRITE_HIGH_WATER_BYTES, CONN_WRITE_LOW_WATER_BYTES)
        settings = self.mux.settings
        sockopts.tune_control_socket(
            transport, settings.keepalive_interval_s, settings.keepalive_timeout_s
        )
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peername = (str(peer[0]), int(peer[1]))
        if self._closed.done():
            # Bytes decrypted during a server-side start_tls reached us before this call and
            # already ended the session: send what it said (its GO_AWAY), then close.
            self._flush()
            transport.close()
            return
        if not self._connected.done():
            self._connected.set_result(None)
        self.transmit()  # anything queued before the transport was attached

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mux.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.mux.buffer_updated(nbytes)
        self.transmit()

    def eof_received(self) -> bool:
        self.mux.receive_eof()
        self.transmit()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.mux.terminated:
            reason = f"connection lost: {exc}" if exc else "connection closed"
            self.mux.close(ErrorCode.NORMAL, reason)
            self.mux.data_to_send()  # nowhere to send it
        self.transmit()
        self._shutdown(ErrorCode.NORMAL, "connection lost")

    def pause_writing(self) -> None:
        self.writing_paused = True
        for stream in list(self._streams.values()):
            stream.connection_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for stream in list(self._streams.values()):
            stream.connection_resumed()

    # -- the pump ------------------------------------------------------------------------------
    def transmit(self) -> None:
        """Drain the core's events, write its output, re-arm the timer. Re-entrant calls (a
        handler closing the session mid-drain) return at once: the running drain finishes."""
        self._transmit_scheduled = False
        if self._in_transmit:
            return
        self._in_transmit = True
        try:
            self._dispatch()
            self._flush()
            self._arm_timer()
        finally:
            self._in_transmit = False

    def _queued(self) -> None:
        """A command queued output or events: transmit on the next iteration, or write the
        output now if it passed its bound."""
        if self.mux.pending_output_bytes > MAX_PENDING_OUTPUT_BYTES:
            self._flush()
        if not self._transmit_scheduled:
            self._transmit_scheduled = True
            self.loop.call_soon(self.transmit)

    # -- application API ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_connected(self) -> None:
        await self._connected

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def open_stream(self, header: StreamHeader | VisitorOpen) -> MuxStream:
        """Open a stream now; data may be sent before the peer accepts it."""
        if self.mux.terminated:
            raise SessionClosedError(self.close_code or 0, self.close_reason or "session closed")
        stream_id = self.mux.open_stream(header)
        stream = MuxStream(self, stream_id, _stream_header(header), local=True)
        if isinstance(header, VisitorOpen):
            stream.visitor = header
        self._streams[stream_id] = stream
        self._queued()
        return stream

    def accept_stream(self, stream: MuxStream, *, hold_ack: bool = False) -> None:
        """Accept a stream the peer opened (MuxStream.attach does this for a splice). With
        `hold_ack`, the ACK leaves with the stream's first frame, or after ACK_DELAY_S."""
        mux = self.mux
        mux.accept_stream(stream.stream_id, hold_ack=hold_ack)
        stream.accepted()
        # What the core did, not what was asked: it may send the ACK at once even when asked
        # to hold it.
        if mux.pending_output_bytes:
            self._queued()
        if mux.owed_acks and self._ack_timer is None:
            self._ack_timer = self.loop.call_later(ACK_DELAY_S, self._send_owed_acks)

    def _send_owed_acks(self) -> None:
        self._ack_timer = None
        if not self.mux.terminated and self.mux.owed_acks:
            self.mux.send_owed_acks()
            self.transmit()

    async def next_message(self) -> Message:
        """The next control message; raises SessionClosedError once the session is over."""
        while not self._messages:
            if self._closed.done():
                raise SessionClosedError(self.close_code or 0, self.close_reason)
            self._message_waiter = self.loop.create_future()
            try:
                await self._message_waiter
            finally:
                self._message_waiter = None
        message = self._messages.popleft()
        if not self._messages:
            self._messages = None  # an idle session keeps no queue
        return message

    def send_message(self, message: Message) -> None:
        if self.mux.terminated:
            raise SessionClosedError(self.close_code or 0, self.close_reason or "session closed")
        self.mux.send_message(message)
        self._queued()

    def send_datagram(self, flow_id: int, data: bytes) -> bool:
        """Queue a datagram; False means it was dropped (congested or too large)."""
        if self.writing_paused:
            return False
        ok = self.mux.send_datagram(flow_id, data)
        if ok:
            self._queued()
        return ok

    def send_packed_datagrams(self, flow_id: int, datagrams: list[bytes]) -> bool:
        """Queue several datagrams of one flow in one frame (MuxConnection's rules); False
        means all were dropped, or the peer does not unpack (`unpacks`)."""
        if self.writing_paused:
            return False
        ok = self.mux.send_packed_datagrams(flow_id, datagrams)
        if ok:
            self._queued()
        return ok

    @property
    def unpacks(self) -> bool:
        """The peer takes packed datagrams (it said so on its datagram credits)."""
        return self.mux.datagrams.peer_unpacks

    def go_away(self, code: int, reason: str) -> None:
        self.mux.go_away(code, reason)
        self._flush()

    def close(self, code: int = ErrorCode.NORMAL, reason: str = "closed") -> None:
        """End the session now: GO_AWAY, flush, close the transport. Idempotent."""
        if self._closed.done():
            return
        self.mux.close(code, reason)
        self._flush()
        self.transmit()
        if not self._in_transmit:
            self._shutdown(code, reason)

    def abort(self, code: int = ErrorCode.NORMAL, reason: str = "aborted") -> None:
        """End the session now and drop the connection at once, with no TLS close_notify
        exchange to wait for: what is queued (and the GO_AWAY) is handed to the socket first.
        For a login that failed, where the caller's event loop may end right away (a graceful
        TLS close would leave the socket open until the peer answered). Idempotent."""
        if self._closed.done():
            return
        self.mux.close(code, reason)
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()  # before transmit(): _shutdown then leaves it alone
        self.transmit()
        if not self._in_transmit:
            self._shutdown(code, reason)

    def stream_count(self) -> int:
        return len(self._streams)

    def streams(self) -> list[MuxStream]:
        return list(self._streams.values())

    def buffered_bytes(self) -> int:
        """Bytes this session holds in user space now: the core's unsent output, the
        transport's write buffer and every stream's `buffered_bytes` (a gauge)."""
        total = self.mux.pending_output_bytes
        if self.transport is not None and not self.transport.is_closing():
            total += self.transport.get_write_buffer_size()
        for stream in self._streams.values():
            total += stream.buffered_bytes
        return total

    async def wait_idle(self) -> None:
        """Wait until no stream is open (used to drain before shutdown)."""
        while self._streams and not self._closed.done():
            self._idle_waiter = self.loop.create_future()
            try:
                await asyncio.wait({self._idle_waiter, self._closed}, return_when="FIRST_COMPLETED")
            finally:
                self._idle_waiter = None

    # -- stream commands (MuxStream calls these; none drains events) ---------------------------
    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        mux = self.mux
        try:
            n = mux.send_data(stream_id, data)
        except LocalProtocolError:
            if mux.has_stream(stream_id):
                raise
            # Reset by the peer in this same read; the reset event, still queued, ends the
            # stream. Nothing can be sent on it.
            return 0
        if n:  # _queued, inline: this runs once per read of every spliced socket
            if mux.pending_output_bytes > MAX_PENDING_OUTPUT_BYTES:
                self._flush()
            if not self._transmit_scheduled:
                self._transmit_scheduled = True
                self.loop.call_soon(self.transmit)
        return n

    def end_stream(self, stream_id: int) -> None:
        try:
            self.mux.end_stream(stream_id)
        except LocalProtocolError:
            return  # already finished or reset: nothing to end
        self._queued()  # its StreamClosed, if both sides are done, comes with the transmit

    def reset_stream(self, stream_id: int, code: int, reason: str) -> None:
        self._drop(stream_id)
        if not self.mux.terminated:
            self.mux.reset_stream(stream_id, code, reason)
            self._queued()

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        # A terminated core has no streams left: it grants nothing.
        if self.mux.acknowledge_data(stream_id, nbytes):
            self._queued()

    # -- internals ----------------------------------------------------------------------------
    def _drop(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        if not self._streams and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def _dispatch(self) -> None:
        mux = self.mux
        streams = self._streams
        while batch := mux.drain_events():
            for event in batch:
                if type(event) is DataReceived:  # the data path: handled here, one call less
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.data_received(event.data)
                elif type(event) is DatagramReceived:
                    if self.on_datagram is not None:
                        self.on_datagram(event.flow_id, event.data)
                else:
                    self._handle_event(event, streams)

    def _handle_event(self, event: Event, streams: dict[int, MuxStream]) -> None:
        if type(event) is SendWindowOpened:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.window_opened()
        elif type(event) is StreamOpened:
            self._on_stream_opened(event)
        elif type(event) is StreamAccepted:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.accepted()
        elif type(event) is StreamEnded:
            stream = streams.get(event.stream_id)
            if stream is not None:
                stream.eof_received()
        elif type(event) is StreamReset:
            stream = streams.get(event.stream_id)
            if stream is not None:
                self._drop(event.stream_id)
                stream.reset_received(event.code, event.reason)
        elif type(event) is StreamClosed:
            stream = streams.get(event.stream_id)
            if stream is not None:
                self._drop(event.stream_id)
                stream.closed_cleanly()
        elif type(event) is MessageReceived:
            self._on_message(event.message)
        elif type(event) is PingAcknowledged:
            self.rtt_s = self.loop.time() - event.sent_at
        elif type(event) is GoAwayReceived:
            logger.info("peer is going away (code %s): %s", event.code, peer_text(event.reason))
            if self.on_go_away is not None:
                self.on_go_away(event.code, event.reason)
        elif type(event) is ConnectionTerminated:
            self._flush()
            self._shutdown(event.code, event.reason)

    def _on_stream_opened(self, event: StreamOpened) -> None:
        stream = MuxStream(self, event.stream_id, _stream_header(event.header), local=False)
        if isinstance(event.header, VisitorOpen):
            stream.visitor = event.header
        self._streams[event.stream_id] = stream
        if self.on_stream is None:
            stream.abort(ErrorCode.REFUSED, "this side accepts no streams")
            return
        self.on_stream(stream)

    def _on_message(self, message: Message) -> None:
        if self.message_filter is not None and self.message_filter(message):
            return
        if self.mux.terminated:
            return  # the session is ending: later messages are not processed
        if self._messages is None:
            self._messages = deque()
        if len(self._messages) >= self.message_limit:
            self.close(ErrorCode.PROTOCOL_ERROR, "too many unprocessed control messages")
            return
        self._messages.append(message)
        self._wake_messages()

    def _wake_messages(self) -> None:
        if self._message_waiter is not None and not self._message_waiter.done():
            self._message_waiter.set_result(None)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return  # not attached yet: the output waits in the mux for connection_made
        size = self.mux.pending_output_bytes
        if not size:
            return  # most transmits after a read have nothing to write (no frame is empty)
        chunks = self.mux.data_to_send()
        if transport.is_closing():
            return
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif size <= _JOIN_LIMIT_BYTES:
            transport.write(b"".join(chunks))
        else:
            transport.writelines(chunks)

    def _arm_timer(self) -> None:
        deadline = None if self._closed.done() else self.mux.get_timer()
        if deadline == self._timer_at:
            return  # unchanged: most transmits leave the keepalive deadline where it was
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.mux.handle_timer(self.loop.time())
        self.transmit()

    def _shutdown(self, code: int, reason: str) -> None:
        if self._closed.done():
            return
        self.close_code = code
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.reset_received(ErrorCode.CANCELLED, f"session closed: {reason}")
        if self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)
        self.accept_deadlines.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._closed.set_result(None)
        self._wake_messages()
        if not self._connected.done():
            self._connected.set_exception(SessionClosedError(code, reason))
            self._connected.exception()


def _stream_header(header: StreamHeader | VisitorOpen) -> StreamHeader:
    """A visitor stream's StreamHeader names its target proxy (its VisitorOpen is kept too)."""
    if isinstance(header, StreamHeader):
        return header
    return StreamHeader(header.server_name, "", 0)
