"""MuxStream: one multiplexed stream as an asyncio object.

Theory of operation
-------------------
Calls go one way each (see docs/architecture.md, "The pump"):

* Down: the stream gives the session *commands* (`send_data`, `end_stream`, `reset_stream`,
  `acknowledge`, `accept_stream`). A command only changes the sans-IO core and asks for a
  transmit; it never runs another stream's code, because the session drains the core's events
  only in `MuxSession.transmit()`, at the end of an entry point (a read, the timer, a scheduled
  transmit), never inside a command.
* Up: the session's `transmit()` delivers what the peer did through the stream's small public
  event interface (`StreamEvents`): `data_received`, `eof_received`, `window_opened`,
  `accepted`, `reset_received`, `closed_cleanly`, `connection_paused`, `connection_resumed`.

The application uses one of two styles:

* Spliced (the TCP hot path): `attach(transport)` joins the stream to a local socket.
  Incoming DATA is written straight to the transport and acknowledged (credited to the peer)
  only while that transport is below its write high-water mark; when it pauses, credit stops,
  so the peer's window runs out and backpressure reaches the far socket. Outgoing, the local
  protocol calls `send`; what the send window does not take is kept (at most one read) and
  the local transport's reading is paused until the window opens again.
* Async (control-plane and HTTP code): `read`, `write`, `write_eof`, `close`, `abort`,
  `wait_closed`. Data that arrives waits in a queue bounded by the stream window, and is
  credited as `read` consumes it. A reader that serves from callbacks (the HTTP vhost's lane)
  sets `set_rx_notify(callback)` and takes the data with `read_nowait` instead of awaiting.

Memory per stream is bounded by the receive window plus the local transport's high-water
mark on one side, and by one read on the other; `buffered_bytes` is the gauge. An idle stream
holds no future, queue or timer until something waits on it (docs/performance.md, "Memory").

A compressed stream (`header.compression`, protocol/compression.py) keeps both styles; its
state is a `StreamCodec` (streamcodec.py). `send` compresses, and each compressed piece stays
its own backlog item, so one DATA frame never spans two pieces; windows and counters count
the compressed bytes. Received frames wait compressed in the codec until the consumer takes
their bytes (`read`, or a spliced socket below high water); a frame that inflates past
`MAX_INFLATED_BYTES_PER_FRAME`, or corrupt data, resets the stream (PROTOCOL_ERROR).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ..compression import ZSTD
from ..errors import ErrorCode
from ..messages import StreamHeader, VisitorOpen
from . import sockopts
from .streamcodec import StreamCodec
from .streamio import AsyncSide
from .streamsplice import LOCAL_WRITE_HIGH_WATER_BYTES, LOCAL_WRITE_LOW_WATER_BYTES, SpliceSide
from .streamtypes import StreamResetError, StreamTap, TrafficCounters

__all__ = [
    "LOCAL_WRITE_HIGH_WATER_BYTES",
    "LOCAL_WRITE_LOW_WATER_BYTES",
    "MuxStream",
    "StreamEvents",
    "StreamResetError",
    "StreamTap",
    "TrafficCounters",
]

if TYPE_CHECKING:
    from .connection import MuxSession

logger = logging.getLogger(__name__)

# Bytes taken from a local socket that the window could not send yet (normally one read).
MAX_TX_BACKLOG_BYTES: Final = 4 * 1024 * 1024


class StreamEvents(Protocol):
    """What MuxSession.transmit() tells a stream: the whole session-to-stream interface."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def window_opened(self) -> None: ...
    def accepted(self) -> None: ...
    def reset_received(self, code: int, reason: str) -> None: ...
    def closed_cleanly(self) -> None: ...
    def connection_paused(self) -> None: ...
    def connection_resumed(self) -> None: ...


class MuxStream(SpliceSide, AsyncSide):
    # Slotted, and every future, queue and timer is made on first use: an idle spliced stream
    # is this object and its header (docs/performance.md, "Memory").
    __slots__ = (
        "__weakref__",
        "_accept_due",
        "_accept_error",
        "_accept_fut",
        "_accepted_done",
        "_close_callbacks",
        "_close_fut",
        "_closed_done",
        "_codec",
        "_discard_rx",
        "_rx",
        "_rx_bytes",
        "_rx_eof",
        "_rx_notify",
        "_rx_waiter",
        "_sink",
        "_sink_paused",
        "_source",
        "_source_paused",
        "_tx_backlog",
        "_tx_backlog_bytes",
        "_tx_ended",
        "_tx_eof_pending",
        "_tx_waiter",
        "_unacked",
        "bytes_in",
        "bytes_out",
        "counters",
        "header",
        "opened_locally",
        "reset_code",
        "reset_reason",
        "session",
        "stream_id",
        "tap",
        "visitor",
    )

    def __init__(
        self, session: MuxSession, stream_id: int, header: StreamHeader, *, local: bool
    ) -> None:
        self.session = session
        self.stream_id = stream_id
        self.header = header
        self.visitor: VisitorOpen | None = None  # set on a visitor stream (secret proxies)
        self.opened_locally = local
        # receive side
        self._rx: deque[bytes] | None = None  # made on the first byte an async reader holds
        self._rx_bytes = 0
        self._rx_eof = False
        self._rx_waiter: asyncio.Future[None] | None = None
        # A reader that is called back instead of waiting (`set_rx_notify`, the vhost's lane)
        self._rx_notify: Callable[[], None] | None = None
        self._discard_rx = False
        self._sink: asyncio.Transport | None = None
        self._sink_paused = False
        self._unacked = 0  # bytes written to the sink but not credited yet
        # send side: what the window did not take yet, one item per send (or compressed
        # piece); None when empty
        self._tx_backlog: deque[memoryview] | None = None
        self._tx_backlog_bytes = 0
        self._tx_eof_pending = False
        self._tx_ended = False
        self._tx_waiter: asyncio.Future[None] | None = None
        self._source: asyncio.BaseTransport | None = None
        self._source_paused = False
        # lifecycle: flags, with futures only for someone who waits
        self._accepted_done = False
        self._accept_error: StreamResetError | None = None
        self._accept_fut: asyncio.Future[None] | None = None
        self._accept_due = False  # in the session's accept deadlines (deadlines.py)
        self._closed_done = False
        self._close_fut: asyncio.Future[None] | None = None  # made for wait_closed only
        # add_close_callback's callbacks: a list, not a future's done callbacks (one object
        # fewer per stream; each still runs soon after the close, through call_soon)
        self._close_callbacks: list[Callable[[MuxStream], None]] | None = None
        self.reset_code: int | None = None
        self.reset_reason = ""
        self.bytes_in = 0  # from the peer
        self.bytes_out = 0  # to the peer
        # Optional live traffic counters (the server's per-proxy ones): bytes the local socket
        # sends into the tunnel count as `bytes_in`, bytes the tunnel delivers as `bytes_out`.
        self.counters: TrafficCounters | None = None
        self.tap: StreamTap | None = None
        self._codec = StreamCodec() if header.compression == ZSTD else None

    def __repr__(self) -> str:
        return f"<MuxStream {self.stream_id} proxy={self.header.proxy!r}>"

    @property
    def is_closed(self) -> bool:
        return self._closed_done

    @property
    def buffered_bytes(self) -> int:
        """Bytes this stream holds in user space now: unread received data, the local
        socket's write buffer and the unsent backlog (the memory gauge tests and docs use)."""
        total = self._rx_bytes
        sink = self._sink
        if sink is not None and not sink.is_closing():
            total += sink.get_write_buffer_size()
        if self._codec is not None:
            total += self._codec.buffered_bytes
        return total + self._tx_backlog_bytes

    @property
    def congested(self) -> bool:
        """True while a send would only queue (no window, or the connection is full)."""
        return self._tx_backlog is not None or self.session.writing_paused

    # -- sending ----------------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> bool:
        """Send what the window allows and keep the rest. False means: stop producing (the
        caller pauses); the stream resumes its source itself when the backlog drains."""
        if self._closed_done or self._tx_ended:
            return True  # dropped: the stream is gone; the caller learns via close
        if self._codec is None and self._tx_backlog is None:
            # The common case (plain stream, nothing queued): one command, no piece list,
            # and _count_out inline (this runs once per read of a spliced socket).
            session = self.session
            n = session.send_data(self.stream_id, data)
            self.bytes_out += n
            if self.counters is not None:
                self.counters.bytes_in += n
            if n < len(data):
                self._queue_tx(memoryview(data)[n:])
                self._pause_source()
                more = False
            elif session.writing_paused:
                self._pause_source()
                more = False
            else:
                more = True
        else:
            more = self._send_queued(data)
        if self.tap is not None:  # after the data was queued for the peer
            self.tap.sent(data)
        return more

    def _send_queued(self, data: bytes | memoryview) -> bool:
        """`send` on a compressed stream, or behind a backlog."""
        pieces: list[bytes] | tuple[bytes | memoryview] = (
            (data,) if self._codec is None else self._codec.deflater.compress(data)
        )
        if self._tx_backlog is not None:
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
            if self._tx_backlog is None:
                self._tx_backlog = deque()
            self._tx_backlog.append(piece)
            self._tx_backlog_bytes += len(piece)

    def _count_out(self, nbytes: int) -> None:
        self.bytes_out += nbytes  # as they cross the tunnel (compressed, if the stream is)
        if self.counters is not None:
            self.counters.bytes_in += nbytes

    def send_eof(self) -> None:
        """Half-close our direction once everything before it is sent."""
        if self._tx_ended or self._closed_done:
            return
        if not self.opened_locally and not self._accepted_done:
            self.abort(ErrorCode.CANCELLED, "closed before it was accepted")
            return
        if self._tx_backlog is not None:
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
        self._tx_backlog = None
        if self._tx_eof_pending:
            self._tx_eof_pending = False
            self._tx_ended = True
            self.session.end_stream(self.stream_id)
        self._wake_tx()
        self._resume_source()

    def _wake_tx(self) -> None:
        if self._tx_waiter is not None and not self._tx_waiter.done():
            self._tx_waiter.set_result(None)

    def set_accept_deadline(self, timeout_s: float) -> None:
        """Reset the stream (ACCEPT_TIMEOUT) unless the peer accepts it within `timeout_s`:
        a visitor never hangs on a client that is gone or stuck (userConnTimeout)."""
        if self._accepted_done:
            return
        self._accept_due = True
        self.session.accept_deadlines.add(self, timeout_s)

    def accept_expired(self, timeout_s: float) -> None:
        """The session's accept deadlines found this stream past its deadline."""
        self._accept_due = False
        if not self._accepted_done:
            self.abort(
                ErrorCode.ACCEPT_TIMEOUT,
                f"the tunnel client did not accept the connection within {timeout_s:g}s",
            )

    async def wait_accepted(self) -> None:
        """Wait for the peer's ACK; raises StreamResetError if it refused."""
        if not self._accepted_done:
            if self._accept_fut is None:
                self._accept_fut = self.session.loop.create_future()
            await asyncio.shield(self._accept_fut)
        elif self._accept_error is not None:
            raise StreamResetError(self._accept_error.code, self._accept_error.reason)

    def _settle_accept(self, error: StreamResetError | None) -> None:
        if self._accepted_done:
            return
        self._accepted_done = True
        self._accept_error = error
        if self._accept_due:
            self._accept_due = False
            self.session.accept_deadlines.discard(self)
        fut = self._accept_fut
        if fut is not None and not fut.done():
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)
                fut.exception()  # retrieved: a refused stream is not an error here

    def abort(self, code: int = ErrorCode.CANCELLED, reason: str = "aborted") -> None:
        """Reset the stream in both directions."""
        if self._closed_done:
            return
        self.session.reset_stream(self.stream_id, code, reason)
        # Close the local socket too, so its user sees the end at once.
        self._finish(code, reason)

    def close(self) -> None:
        """Finish our direction and stop caring about the peer's (its data is discarded)."""
        self._discard_rx = True
        self._drop_rx()
        self.send_eof()

    def _drop_rx(self) -> None:
        """Forget received data nobody will read, crediting it to the peer."""
        dropped = self._rx_bytes if self._rx else 0
        self._rx = None
        self._rx_bytes = 0
        if self._codec is not None:
            dropped += self._codec.drop()
        if dropped:
            self._acknowledge(dropped)

    async def wait_closed(self) -> None:
        if self._closed_done:
            return
        if self._close_fut is None:
            self._close_fut = self.session.loop.create_future()
        await asyncio.shield(self._close_fut)

    def add_close_callback(self, callback: Callable[[MuxStream], None]) -> None:
        """Call `callback(stream)` soon after the stream is closed or reset."""
        if self._closed_done:
            self.session.loop.call_soon(callback, self)
            return
        if self._close_callbacks is None:
            self._close_callbacks = [callback]
        else:
            self._close_callbacks.append(callback)

    # -- StreamEvents: called by MuxSession.transmit() only -----------------------------------
    def accepted(self) -> None:
        """The stream is established (the peer's ACK, or our own accept)."""
        self._settle_accept(None)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.counters is not None:
            self.counters.bytes_out += len(data)
        sink = self._sink
        if sink is not None:
            if self._codec is None:  # _deliver, inline: a spliced stream's every DATA frame
                sink.write(data)
                if self._sink_paused:
                    self._unacked += len(data)
                else:
                    self.session.acknowledge(self.stream_id, len(data))
            else:
                self._deliver(data)
        elif self._discard_rx:
            self.session.acknowledge(self.stream_id, len(data))
        elif self._codec is not None:
            self._codec.queue(data)  # inflated when `read` takes it
            self._wake_rx()
        else:
            if self._rx is None:
                self._rx = deque()
            self._rx.append(data)
            self._rx_bytes += len(data)
            self._wake_rx()
        if self.tap is not None and self._codec is None:
            # After forwarding: the copy never delays the data. (A compressed stream's tap
            # sees the inflated bytes, as they are inflated.)
            self.tap.received(data)

    def eof_received(self) -> None:
        self._rx_eof = True
        if self._sink is not None and self._codec is not None and self._codec.frames:
            self._codec.eof_pending = True  # after the compressed frames still waiting
        elif self._sink is not None and not self._sink.is_closing() and not self._tx_ended:
            if self._sink.can_write_eof():
                self._sink.write_eof()
            else:
                sockopts.graceful_close(self._sink)  # a real end of data
        # With our direction ended too, the core's StreamClosed follows (same frame) and
        # closed_cleanly() closes the socket with FIN: no shutdown() just before the close.
        self._wake_rx()

    def window_opened(self) -> None:
        if self._tx_backlog is not None or self._tx_eof_pending:
            self._flush_backlog()

    def connection_resumed(self) -> None:
        if self._tx_backlog is None:
            self._wake_tx()
            self._resume_source()

    def connection_paused(self) -> None:
        self._pause_source()

    def reset_received(self, code: int, reason: str) -> None:
        """The peer reset the stream, or the session ended under it."""
        self._finish(code, reason)

    def closed_cleanly(self) -> None:
        """Both directions ended cleanly: release the local socket after its buffer drains."""
        self._finish(None, "")

    # -----------------------------------------------------------------------------------------
    def detach(self, exc: BaseException | None) -> None:
        """The local socket is gone. A clean close ends our direction; an error resets."""
        self._sink = None
        self._source = None
        self._drop_rx()
        if self._closed_done:
            return
        if exc is not None:
            self.abort(ErrorCode.CANCELLED, f"local connection lost: {exc}")
            return
        self._discard_rx = True
        self.send_eof()

    def _finish(self, code: int | None, reason: str) -> None:
        if self._closed_done:
            return
        if code is not None:
            self.reset_code = code
            self.reset_reason = reason
        self._tx_backlog = None
        self._tx_backlog_bytes = 0
        self._settle_accept(None if code is None else StreamResetError(code, reason))
        self._closed_done = True
        if self._close_fut is not None and not self._close_fut.done():
            self._close_fut.set_result(None)
        if self._close_callbacks is not None:
            callbacks, self._close_callbacks = self._close_callbacks, None
            for callback in callbacks:
                self.session.loop.call_soon(callback, self)
        if self.tap is not None:
            self.tap.closed()
            self.tap = None
        self._wake_rx()
        self._wake_tx()
        if self._sink is not None:
            if code is None and self._codec is not None and self._codec.frames:
                self._codec.close_pending = True  # compressed frames still wait for the sink
            elif code is None:
                sockopts.graceful_close(self._sink)  # both directions ended with FIN
            else:
                # A reset, or the session is gone: the local socket's user must see a broken
                # connection (RST), never a clean end of data (FIN).
                sockopts.reset(self._sink)

    def _wake_rx(self) -> None:
        if self._rx_waiter is not None and not self._rx_waiter.done():
            self._rx_waiter.set_result(None)
        if self._rx_notify is not None:
            self._rx_notify()
