"""MuxStream: one multiplexed stream as an asyncio object.

Theory of operation
-------------------
A stream is driven from two sides. The session (connection.py) delivers what the peer did:
`_on_data`, `_on_eof`, `_on_reset`, `_on_window`, `_on_accepted`. The application uses one
of two styles:

* Spliced (the TCP hot path): `attach(transport)` joins the stream to a local socket.
  Incoming DATA is written straight to the transport and acknowledged (credited to the peer)
  only while that transport is below its write high-water mark; when it pauses, credit stops,
  so the peer's window runs out and backpressure reaches the far socket. Outgoing, the local
  protocol calls `write`; what the send window does not take is kept (at most one read) and
  the local transport's reading is paused until the window opens again.
* Async (control-plane and HTTP code): `read`, `write`, `write_eof`, `close`, `abort`,
  `wait_closed`. Data that arrives waits in a queue bounded by the stream window, and is
  credited as `read` consumes it.

Memory per stream is bounded by the receive window plus the local transport's high-water
mark on one side, and by one read on the other.

Compressed streams (`header.compression`, protocol/compression.py) keep both styles. Outgoing
bytes are compressed in `send` and each piece goes to the mux on its own (the backlog keeps the
pieces apart), so windows and counters see the compressed bytes. Incoming DATA frames stay
compressed while they wait (in `_rx`, bounded by the window), and are inflated one frame at a
time when the consumer can take them: when `read` asks, or when the spliced socket is below
high water. So the inflated bytes in memory are at most one frame's (`MAX_INFLATED_BYTES_PER_
FRAME`) beyond what the uncompressed stream would hold, and a frame past that limit, or corrupt
data, resets the stream (PROTOCOL_ERROR).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from ..compression import ZSTD, CompressionError, Deflater, Inflater
from ..errors import ErrorCode
from ..messages import StreamHeader
from . import sockopts
from .streamtypes import StreamResetError, StreamTap, TrafficCounters

__all__ = ["MuxStream", "StreamResetError", "StreamTap", "TrafficCounters"]

if TYPE_CHECKING:
    from .connection import MuxSession

logger = logging.getLogger(__name__)

# A local transport pauses our reads of the stream above this many buffered bytes.
LOCAL_WRITE_HIGH_WATER_BYTES: Final = 1024 * 1024
LOCAL_WRITE_LOW_WATER_BYTES: Final = 256 * 1024
# Bytes taken from a local socket that the window could not send yet (normally one read).
MAX_TX_BACKLOG_BYTES: Final = 4 * 1024 * 1024


class MuxStream:
    def __init__(
        self, session: MuxSession, stream_id: int, header: StreamHeader, *, local: bool
    ) -> None:
        self.session = session
        self.stream_id = stream_id
        self.header = header
        self.opened_locally = local
        loop = session.loop
        # receive side
        self._rx: deque[bytes] = deque()
        self._rx_bytes = 0
        self._rx_eof = False
        self._rx_waiter: asyncio.Future[None] | None = None
        self._discard_rx = False
        self._sink: asyncio.Transport | None = None
        self._sink_paused = False
        self._unacked = 0  # bytes written to the sink but not credited yet
        # send side: what the window did not take yet, one item per send (or compressed piece)
        self._tx_backlog: deque[memoryview] = deque()
        self._tx_backlog_bytes = 0
        self._tx_eof_pending = False
        self._tx_ended = False
        self._tx_waiter: asyncio.Future[None] | None = None
        self._source: asyncio.BaseTransport | None = None
        self._source_paused = False
        # lifecycle
        self._accepted: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self.reset_code: int | None = None
        self.reset_reason = ""
        self.bytes_in = 0  # from the peer
        self.bytes_out = 0  # to the peer
        # Optional live traffic counters (the server's per-proxy ones): bytes the local socket
        # sends into the tunnel count as `bytes_in`, bytes the tunnel delivers as `bytes_out`.
        self.counters: TrafficCounters | None = None
        self.tap: StreamTap | None = None
        # compression (both ways, or neither): set from the SYN's header on both ends
        compressed = header.compression == ZSTD
        self._deflater = Deflater() if compressed else None
        self._inflater = Inflater() if compressed else None
        self._plain = b""  # inflated bytes `read` has not returned yet (async style)
        self._sink_eof_pending = False  # spliced: FIN waits for the queued frames
        self._sink_close_pending = False  # spliced: the clean close waits for them too

    def __repr__(self) -> str:
        return f"<MuxStream {self.stream_id} proxy={self.header.proxy!r}>"

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    # -- splice style ---------------------------------------------------------------------------
    def attach(self, transport: asyncio.Transport) -> None:
        """Join this stream with a local socket's transport (both directions). A stream the
        peer opened is accepted now, before the local socket can produce data."""
        if not self.opened_locally and not self._accepted.done():
            self.session.accept_stream(self)
        self._sink = transport
        self._source = transport
        transport.set_write_buffer_limits(LOCAL_WRITE_HIGH_WATER_BYTES, LOCAL_WRITE_LOW_WATER_BYTES)
        if self._rx:
            pending, self._rx = self._rx, deque()
            self._rx_bytes = 0
            for chunk in pending:
                self._deliver(chunk)
        if self._rx_eof and transport.can_write_eof():
            if self._rx:
                self._sink_eof_pending = True
            else:
                transport.write_eof()
        if self._tx_backlog or self.session.writing_paused:
            # uvloop starts reading after connection_made returns, undoing a pause made in
            # it: pause on the next iteration instead (before the first read can arrive).
            self.session.loop.call_soon(self._pause_if_congested)

    def sink_paused(self) -> None:
        """The local transport's write buffer went above high water."""
        self._sink_paused = True

    def sink_resumed(self) -> None:
        self._sink_paused = False
        if self._unacked:
            n, self._unacked = self._unacked, 0
            self._acknowledge(n)
        # Compressed frames that waited for the sink: inflate them while it takes more.
        while self._rx and not self._sink_paused and self._sink is not None:
            chunk = self._rx.popleft()
            self._rx_bytes -= len(chunk)
            self._deliver_inflated(chunk)
        if not self._rx and self._sink is not None and not self._sink.is_closing():
            if self._sink_eof_pending:
                self._sink_eof_pending = False
                self._sink.write_eof()
            if self._sink_close_pending:
                self._sink_close_pending = False
                sockopts.graceful_close(self._sink)

    def _acknowledge(self, nbytes: int) -> None:
        if not self._closed.done():
            self.session.acknowledge(self.stream_id, nbytes)

    def _deliver(self, data: bytes) -> None:
        """Write a DATA payload to the sink (inflated first on a compressed stream)."""
        assert self._sink is not None
        if self._inflater is not None:
            if self._sink_paused or self._rx:
                self._rx.append(data)  # inflated when the sink resumes (bounded: window)
                self._rx_bytes += len(data)
            else:
                self._deliver_inflated(data)
            return
        self._sink.write(data)
        if self._sink_paused:
            self._unacked += len(data)
        else:
            self.session.acknowledge(self.stream_id, len(data))

    def _deliver_inflated(self, data: bytes) -> None:
        assert self._sink is not None
        plain = self._inflate(data)
        if plain is None:
            return
        if plain:
            self._sink.write(plain)
        if self._sink_paused:
            self._unacked += len(data)
        else:
            self._acknowledge(len(data))
        if self.tap is not None and plain:
            self.tap.received(plain)

    def _inflate(self, data: bytes) -> bytes | None:
        """One compressed DATA frame's plain bytes; None after resetting the stream."""
        assert self._inflater is not None
        try:
            return self._inflater.inflate(data)
        except CompressionError as exc:
            logger.warning("stream %d: %s; resetting it", self.stream_id, exc)
            self._rx.clear()
            self._rx_bytes = 0
            if self._closed.done() and self._sink is not None:
                sockopts.reset(self._sink)  # closed cleanly, then the rest proved bad
            self.abort(ErrorCode.PROTOCOL_ERROR, str(exc))
            return None

    def _pause_if_congested(self) -> None:
        if self._tx_backlog or self.session.writing_paused:
            self._pause_source()

    def _pause_source(self) -> None:
        # Ask the transport itself rather than trusting our flag: a pause made during
        # connection_made does not hold under uvloop.
        self._source_paused = True
        source = self._source
        if source is not None and not source.is_closing():
            transport = cast(asyncio.ReadTransport, source)
            if transport.is_reading():
                transport.pause_reading()

    def _resume_source(self) -> None:
        source = self._source
        if source is not None and self._source_paused and not self.session.writing_paused:
            self._source_paused = False
            if not source.is_closing():
                transport = cast(asyncio.ReadTransport, source)
                if not transport.is_reading():
                    transport.resume_reading()

    # -- sending ----------------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> bool:
        """Send what the window allows and keep the rest. False means: stop producing (the
        caller pauses); the stream resumes its source itself when the backlog drains."""
        if self._closed.done() or self._tx_ended:
            return True  # dropped: the stream is gone; the caller learns via close
        more = self._send(data)
        if self.tap is not None:  # after the data was queued for the peer
            self.tap.sent(data)
        return more

    def _send(self, data: bytes | memoryview) -> bool:
        pieces: list[bytes] | tuple[bytes | memoryview] = (
            (data,) if self._deflater is None else self._deflater.compress(data)
        )
        if self._tx_backlog:
            # A read that was already under way when we paused the source: queue it behind
            # the backlog (bounded; a source that ignores pausing gets the stream reset).
            size = sum(len(piece) for piece in pieces)
            if self._tx_backlog_bytes + size > MAX_TX_BACKLOG_BYTES:
                logger.warning(
                    "stream %d: the local socket kept sending while paused; resetting",
                    self.stream_id,
                )
                self.abort(ErrorCode.INTERNAL_ERROR, "local sender ignored backpressure")
                return False
            for piece in pieces:
                self._queue_tx(memoryview(piece))
            self._pause_source()
            return False
        for i, piece in enumerate(pieces):
            n = self.session.send_data(self.stream_id, piece)
            self._count_out(n)
            if n < len(piece):
                # Each piece stays its own item: one DATA frame never spans two compressed
                # pieces (see protocol/compression.py).
                self._queue_tx(memoryview(piece)[n:])
                for rest in pieces[i + 1 :]:
                    self._queue_tx(memoryview(rest))
                self._pause_source()
                return False
        if self.session.writing_paused:
            self._pause_source()
            return False
        return True

    def _queue_tx(self, piece: memoryview) -> None:
        if piece:
            self._tx_backlog.append(piece)
            self._tx_backlog_bytes += len(piece)

    def _count_out(self, nbytes: int) -> None:
        self.bytes_out += nbytes  # as they cross the tunnel (compressed, if the stream is)
        if self.counters is not None:
            self.counters.bytes_in += nbytes

    def send_eof(self) -> None:
        """Half-close our direction once everything before it is sent."""
        if self._tx_ended or self._closed.done():
            return
        if not self.opened_locally and not self._accepted.done():
            self.abort(ErrorCode.CANCELLED, "closed before it was accepted")
            return
        if self._tx_backlog:
            self._tx_eof_pending = True
            return
        self._tx_ended = True
        self.session.end_stream(self.stream_id)

    def _flush_backlog(self) -> None:
        backlog = self._tx_backlog
        while backlog:
            piece = backlog[0]
            n = self.session.send_data(self.stream_id, piece)
            self._count_out(n)
            self._tx_backlog_bytes -= n
            if n < len(piece):
                backlog[0] = piece[n:]
                return
            backlog.popleft()
        if self._tx_eof_pending:
            self._tx_eof_pending = False
            self._tx_ended = True
            self.session.end_stream(self.stream_id)
        self._wake_tx()
        self._resume_source()

    def _wake_tx(self) -> None:
        if self._tx_waiter is not None and not self._tx_waiter.done():
            self._tx_waiter.set_result(None)

    # -- async style ------------------------------------------------------------------------
    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to `max_bytes`; b"" at end of stream. Raises StreamResetError after a reset."""
        if self._inflater is not None:
            return await self._read_inflated(max_bytes)
        await self._wait_rx()
        if not self._rx:
            return b""
        chunk = self._rx[0]
        if len(chunk) <= max_bytes:
            self._rx.popleft()
        else:
            self._rx[0] = chunk[max_bytes:]
            chunk = chunk[:max_bytes]
        self._rx_bytes -= len(chunk)
        self.session.acknowledge(self.stream_id, len(chunk))
        return chunk

    async def _wait_rx(self) -> None:
        """Until a frame waits in `_rx`, or the end (nothing waits then)."""
        while not self._rx:
            if self.reset_code is not None:
                raise StreamResetError(self.reset_code, self.reset_reason)
            if self._rx_eof or self._closed.done():
                return
            self._rx_waiter = self.session.loop.create_future()
            try:
                await self._rx_waiter
            finally:
                self._rx_waiter = None

    async def _read_inflated(self, max_bytes: int) -> bytes:
        while not self._plain:
            await self._wait_rx()
            if not self._rx:
                return b""
            chunk = self._rx.popleft()
            self._rx_bytes -= len(chunk)
            plain = self._inflate(chunk)
            if plain is None:
                raise StreamResetError(ErrorCode.PROTOCOL_ERROR, self.reset_reason)
            self._acknowledge(len(chunk))
            if self.tap is not None and plain:
                self.tap.received(plain)
            self._plain = plain
        out, self._plain = self._plain[:max_bytes], self._plain[max_bytes:]
        return out

    async def write(self, data: bytes | memoryview) -> None:
        """Send all of `data`, waiting while the peer's window or the connection is full."""
        if self.reset_code is not None:
            raise StreamResetError(self.reset_code, self.reset_reason)
        if self._tx_ended or self._closed.done():
            raise BrokenPipeError("stream closed for writing")
        self.send(data)
        await self.drain()

    async def drain(self) -> None:
        while self._tx_backlog or self.session.writing_paused:
            if self.reset_code is not None:
                raise StreamResetError(self.reset_code, self.reset_reason)
            if self._closed.done():
                raise BrokenPipeError("stream closed for writing")
            self._tx_waiter = self.session.loop.create_future()
            try:
                await self._tx_waiter
            finally:
                self._tx_waiter = None
        if self.reset_code is not None:  # the reset dropped what was still unsent
            raise StreamResetError(self.reset_code, self.reset_reason)

    def write_eof(self) -> None:
        self.send_eof()

    def at_eof(self) -> bool:
        """True once the peer sent FIN or the stream is closed (buffered data may remain)."""
        return self._rx_eof or self._closed.done()

    def set_accept_deadline(self, timeout_s: float) -> None:
        """Reset the stream (ACCEPT_TIMEOUT) unless the peer accepts it within `timeout_s`:
        a visitor never hangs on a client that is gone or stuck (userConnTimeout)."""
        if self._accepted.done():
            return
        handle = self.session.loop.call_later(timeout_s, self._accept_expired, timeout_s)
        self._accepted.add_done_callback(lambda _: handle.cancel())

    def _accept_expired(self, timeout_s: float) -> None:
        if not self._accepted.done():
            self.abort(
                ErrorCode.ACCEPT_TIMEOUT,
                f"the tunnel client did not accept the connection within {timeout_s:g}s",
            )

    async def wait_accepted(self) -> None:
        """Wait for the peer's ACK; raises StreamResetError if it refused."""
        await asyncio.shield(self._accepted)

    def abort(self, code: int = ErrorCode.CANCELLED, reason: str = "aborted") -> None:
        """Reset the stream in both directions."""
        if self._closed.done():
            return
        self.session.reset(self.stream_id, code, reason)
        # Close the local socket too, so its user sees the end at once.
        self._finish(code, reason, notify_sink=True)

    def close(self) -> None:
        """Finish our direction and stop caring about the peer's (its data is discarded)."""
        self._discard_rx = True
        self._plain = b""
        self._drop_rx()
        self.send_eof()

    def _drop_rx(self) -> None:
        """Forget the frames waiting in `_rx`, crediting them to the peer."""
        if self._rx:
            self._acknowledge(self._rx_bytes)
            self._rx.clear()
            self._rx_bytes = 0

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def add_close_callback(self, callback: Callable[[MuxStream], None]) -> None:
        """Call `callback(stream)` once the stream is closed or reset."""
        self._closed.add_done_callback(lambda _: callback(self))

    # -- from the session ---------------------------------------------------------------------
    def _on_accepted(self) -> None:
        if not self._accepted.done():
            self._accepted.set_result(None)

    def _on_data(self, data: bytes) -> None:
        self.bytes_in += len(data)  # as they crossed the tunnel (compressed, if the stream is)
        if self.counters is not None:
            self.counters.bytes_out += len(data)
        if self._sink is not None:
            self._deliver(data)
        elif self._discard_rx:
            self.session.acknowledge(self.stream_id, len(data))
        else:
            self._rx.append(data)
            self._rx_bytes += len(data)
            self._wake_rx()
        if self.tap is not None and self._inflater is None:
            # After forwarding: the copy never delays the data. (A compressed stream's tap
            # sees the inflated bytes, when they are inflated.)
            self.tap.received(data)

    def _on_eof(self) -> None:
        self._rx_eof = True
        if self._sink is not None and self._rx:
            self._sink_eof_pending = True  # after the compressed frames still waiting
        elif self._sink is not None and not self._sink.is_closing():
            if self._sink.can_write_eof():
                self._sink.write_eof()
            else:
                sockopts.graceful_close(self._sink)  # a real end of data
        self._wake_rx()

    def _on_window(self) -> None:
        if self._tx_backlog or self._tx_eof_pending:
            self._flush_backlog()

    def _on_session_writable(self) -> None:
        if not self._tx_backlog:
            self._wake_tx()
            self._resume_source()

    def _on_session_paused(self) -> None:
        self._pause_source()

    def _on_reset(self, code: int, reason: str) -> None:
        self._finish(code, reason, notify_sink=True)

    def _on_closed(self) -> None:
        """Both directions ended cleanly: release the local socket after its buffer drains."""
        self._finish(None, "", notify_sink=True)

    def detach(self, exc: BaseException | None) -> None:
        """The local socket is gone. A clean close ends our direction; an error resets."""
        self._sink = None
        self._source = None
        self._drop_rx()
        if self._closed.done():
            return
        if exc is not None:
            self.abort(ErrorCode.CANCELLED, f"local connection lost: {exc}")
            return
        self._discard_rx = True
        self.send_eof()

    def _finish(self, code: int | None, reason: str, *, notify_sink: bool) -> None:
        if self._closed.done():
            return
        if code is not None:
            self.reset_code = code
            self.reset_reason = reason
        self._tx_backlog.clear()
        self._tx_backlog_bytes = 0
        if not self._accepted.done():
            if code is None:
                self._accepted.set_result(None)
            else:
                self._accepted.set_exception(StreamResetError(code, reason))
                self._accepted.exception()  # retrieved: a refused stream is not an error here
        self._closed.set_result(None)
        self.session.forget(self.stream_id)
        if self.tap is not None:
            self.tap.closed()
            self.tap = None
        self._wake_rx()
        self._wake_tx()
        if notify_sink and self._sink is not None:
            if code is None and self._rx:
                self._sink_close_pending = True  # compressed frames still wait for the sink
            elif code is None:
                sockopts.graceful_close(self._sink)  # both directions ended with FIN
            else:
                # A reset, or the session is gone: the local socket's user must see a broken
                # connection (RST), never a clean end of data (FIN).
                sockopts.reset(self._sink)

    def _wake_rx(self) -> None:
        if self._rx_waiter is not None and not self._rx_waiter.done():
            self._rx_waiter.set_result(None)
