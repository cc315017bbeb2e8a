"""MuxSession: drives a sans-IO MuxConnection from an asyncio transport.

One loop does everything: bytes arrive in `buffer_updated` (read in place into the decoder's
buffer), events are drained and dispatched to streams, output is flushed once per event-loop
iteration (small frames coalesce into one write), and one timer handle is re-armed for
keepalive. Backpressure: when the connection's transport is above its write high-water mark,
every attached local socket stops reading until it drains.
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
from .stream import MuxStream

logger = logging.getLogger(__name__)

# The connection's transport pauses local readers above this many buffered bytes.
CONN_WRITE_HIGH_WATER_BYTES: Final = 4 * 1024 * 1024
CONN_WRITE_LOW_WATER_BYTES: Final = 1024 * 1024
# Control messages received but not yet taken by the application; more is a protocol abuse.
MAX_QUEUED_MESSAGES: Final = 1024
# Output chunks up to this total are joined into one write (one TLS record burst).
_JOIN_LIMIT_BYTES: Final = 256 * 1024


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
        self._messages: deque[Message] = deque()
        self._message_waiter: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self.writing_paused = False
        self._connected: asyncio.Future[None] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.rtt_s: float | None = None
        # Control messages held for next_message(); more is the peer's protocol abuse.
        self.message_limit = MAX_QUEUED_MESSAGES

    # -- asyncio.BufferedProtocol ----------------------------------------------------------------
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
        self._arm_timer()
        if not self._connected.done():
            self._connected.set_result(None)
        self._flush()  # anything queued before the transport was attached

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.mux.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.mux.buffer_updated(nbytes)
        self._dispatch()
        self._flush()

    def eof_received(self) -> bool:
        self.mux.receive_eof()
        self._dispatch()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.mux.terminated:
            reason = f"connection lost: {exc}" if exc else "connection closed"
            self.mux.close(ErrorCode.NORMAL, reason)
            self.mux.data_to_send()  # nowhere to send it
        self._dispatch()
        self._shutdown(ErrorCode.NORMAL, "connection lost")

    def pause_writing(self) -> None:
        self.writing_paused = True
        for stream in list(self._streams.values()):
            stream._on_session_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for stream in list(self._streams.values()):
            stream._on_session_writable()

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
        self._schedule_flush()
        return stream

    def accept_stream(self, stream: MuxStream) -> None:
        self.mux.accept_stream(stream.stream_id)
        stream._on_accepted()
        self._schedule_flush()

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
        return self._messages.popleft()

    def send_message(self, message: Message) -> None:
        if self.mux.terminated:
            raise SessionClosedError(self.close_code or 0, self.close_reason or "session closed")
        self.mux.send_message(message)
        self._schedule_flush()

    def send_datagram(self, flow_id: int, data: bytes) -> bool:
        """Queue a datagram; False means it was dropped (congested or too large)."""
        if self.writing_paused:
            return False
        ok = self.mux.send_datagram(flow_id, data)
        if ok:
            self._schedule_flush()
        return ok

    def go_away(self, code: int, reason: str) -> None:
        self.mux.go_away(code, reason)
        self._flush()

    def close(self, code: int = ErrorCode.NORMAL, reason: str = "closed") -> None:
        """End the session now: GO_AWAY, flush, close the transport. Idempotent."""
        if self._closed.done():
            return
        self.mux.close(code, reason)
        self._flush()
        self._dispatch()
        self._shutdown(code, reason)

    def stream_count(self) -> int:
        return len(self._streams)

    def streams(self) -> list[MuxStream]:
        return list(self._streams.values())

    # -- used by MuxStream ------------------------------------------------------------------------
    def send_data(self, stream_id: int, data: bytes | memoryview) -> int:
        if not self.mux.has_stream(stream_id):
            # Reset by the peer in this same read; the reset event, still queued, ends the
            # stream. Nothing can be sent on it.
            return 0
        n = self.mux.send_data(stream_id, data)
        if n:
            self._schedule_flush()
        return n

    def end_stream(self, stream_id: int) -> None:
        try:
            self.mux.end_stream(stream_id)
        except LocalProtocolError:
            return  # already finished or reset: nothing to end
        self._schedule_flush()
        self._dispatch()

    def reset(self, stream_id: int, code: int, reason: str) -> None:
        if not self.mux.terminated:
            self.mux.reset_stream(stream_id, code, reason)
            self._schedule_flush()

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        if not self.mux.terminated:
            self.mux.acknowledge_data(stream_id, nbytes)
            if self.mux.pending_output_bytes:
                self._schedule_flush()

    def forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        if not self._streams and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until no stream is open (used to drain before shutdown)."""
        while self._streams and not self._closed.done():
            self._idle_waiter = self.loop.create_future()
            try:
                await asyncio.wait({self._idle_waiter, self._closed}, return_when="FIRST_COMPLETED")
            finally:
                self._idle_waiter = None

    # -- internals ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        mux = self.mux
        streams = self._streams
        while (event := mux.next_event()) is not None:
            if type(event) is DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data)
            elif type(event) is SendWindowOpened:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_window()
            elif type(event) is StreamOpened:
                self._on_stream_opened(event)
            elif type(event) is StreamAccepted:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_accepted()
            elif type(event) is StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_eof()
            elif type(event) is StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_reset(event.code, event.reason)
            elif type(event) is StreamClosed:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_closed()
            elif type(event) is MessageReceived:
                self._on_message(event.message)
            elif type(event) is DatagramReceived:
                if self.on_datagram is not None:
                    self.on_datagram(event.flow_id, event.data)
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
        if len(self._messages) >= self.message_limit:
            self.close(ErrorCode.PROTOCOL_ERROR, "too many unprocessed control messages")
            return
        self._messages.append(message)
        self._wake_messages()

    def _wake_messages(self) -> None:
        if self._message_waiter is not None and not self._message_waiter.done():
            self._message_waiter.set_result(None)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            return  # not attached yet: the output waits in the mux for connection_made
        chunks = self.mux.data_to_send()
        if not chunks or transport.is_closing():
            return
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif sum(map(len, chunks)) <= _JOIN_LIMIT_BYTES:
            transport.write(b"".join(chunks))
        else:
            transport.writelines(chunks)

    def _arm_timer(self) -> None:
        deadline = self.mux.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.mux.handle_timer(self.loop.time())
        self._dispatch()
        self._flush()
        if not self._closed.done():
            self._arm_timer()

    def _shutdown(self, code: int, reason: str) -> None:
        if self._closed.done():
            return
        self.close_code = code
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self._streams.values()):
            stream._on_reset(ErrorCode.CANCELLED, f"session closed: {reason}")
        self._streams.clear()
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
