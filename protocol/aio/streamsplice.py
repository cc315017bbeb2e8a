"""The splice style of a MuxStream: the stream joined to a local socket's transport.

Incoming DATA is written straight to the transport and credited to the peer only while that
transport is below its write high-water mark; when it pauses, credit stops, so the peer's
window runs out and backpressure reaches the far socket. Outgoing, the local protocol calls
`MuxStream.send`; while the window or the connection is full, the transport's reading is
paused. A mixin of `MuxStream` (stream.py), which owns the state it uses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, cast

from ..compression import CompressionError
from ..errors import ErrorCode
from . import sockopts

if TYPE_CHECKING:
    from collections import deque

    from ..messages import VisitorOpen
    from .connection import MuxSession
    from .stream import MuxStream
    from .streamcodec import StreamCodec
    from .streamtypes import StreamTap

logger = logging.getLogger("protocol.aio.stream")

# A local transport pauses our reads of the stream above this many buffered bytes.
LOCAL_WRITE_HIGH_WATER_BYTES: Final = 1024 * 1024
LOCAL_WRITE_LOW_WATER_BYTES: Final = 256 * 1024


class SpliceSide:
    if not TYPE_CHECKING:  # no __dict__ at run time; mypy checks the slots on MuxStream
        __slots__ = ()

    if TYPE_CHECKING:  # MuxStream's state and methods that this side uses
        session: MuxSession
        stream_id: int
        opened_locally: bool
        tap: StreamTap | None
        visitor: VisitorOpen | None
        _codec: StreamCodec | None
        _accepted_done: bool
        bytes_in: int
        _closed_done: bool
        _rx: deque[bytes] | None
        _rx_bytes: int
        _rx_eof: bool
        _sink: asyncio.Transport | None
        _sink_paused: bool
        _source: asyncio.BaseTransport | None
        _source_paused: bool
        _tx_backlog: deque[memoryview] | None
        _unacked: int

        def abort(self, code: int = ErrorCode.CANCELLED, reason: str = "aborted") -> None: ...

    def attach(self, transport: asyncio.Transport) -> None:
        """Join this stream with a local socket's transport (both directions). A stream the
        peer opened is accepted now, before the local socket can produce data. When the peer
        has already sent data (it speaks first, so it does not wait for the ACK), the ACK is
        held to leave with the socket's first bytes: one TLS record and one wake-up of the
        peer fewer per connection. An opener that has sent nothing may be waiting for the
        ACK (tunneld's stcp owner stream does), and a visitor stream's opener waits for it:
        those get it at once. A stream that ended while its socket was being dialed (the
        visitor reset it, the session closed) resets the socket: nothing would ever close it."""
        if self._closed_done:
            sockopts.reset(transport)
            return
        if not self.opened_locally and not self._accepted_done:
            hold = self.bytes_in > 0 and self.visitor is None
            self.session.accept_stream(cast("MuxStream", self), hold_ack=hold)
        self._sink = transport
        self._source = transport
        transport.set_write_buffer_limits(LOCAL_WRITE_HIGH_WATER_BYTES, LOCAL_WRITE_LOW_WATER_BYTES)
        if self._rx:
            pending, self._rx = self._rx, None
            self._rx_bytes = 0
            for chunk in pending:
                self._deliver(chunk)
        if self._rx_eof and transport.can_write_eof():
            if self._codec is not None and self._codec.frames:
                self._codec.eof_pending = True
            else:
                transport.write_eof()
        if self._codec is not None:
            self._drain_codec(self._codec)  # frames that came before the socket did
        if self._tx_backlog is not None or self.session.writing_paused:
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
        if self._codec is not None:
            self._drain_codec(self._codec)

    def _drain_codec(self, codec: StreamCodec) -> None:
        """Inflate the compressed frames that waited for the sink while it takes more."""
        while codec.frames and not self._sink_paused and self._sink is not None:
            self._deliver_inflated(codec.pop())
        sink = self._sink
        if not codec.frames and sink is not None and not sink.is_closing():
            if codec.eof_pending:
                codec.eof_pending = False
                sink.write_eof()
            if codec.close_pending:
                codec.close_pending = False
                sockopts.graceful_close(sink)

    def _acknowledge(self, nbytes: int) -> None:
        if not self._closed_done:
            self.session.acknowledge(self.stream_id, nbytes)

    def _deliver(self, data: bytes) -> None:
        """Write a DATA payload to the sink (inflated first on a compressed stream)."""
        assert self._sink is not None
        if self._codec is not None:
            if self._sink_paused or self._codec.frames:
                self._codec.queue(data)  # inflated when the sink resumes (bounded: window)
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
            if self.tap is not None:
                self.tap.received(plain)
        if self._sink_paused:
            self._unacked += len(data)
        else:
            self._acknowledge(len(data))

    def _inflate(self, data: bytes) -> bytes | None:
        """One compressed DATA frame's plain bytes; None after resetting the stream."""
        assert self._codec is not None
        try:
            return self._codec.inflater.inflate(data)
        except CompressionError as exc:
            logger.warning("stream %d: %s; resetting it", self.stream_id, exc)
            self._codec.drop()
            if self._closed_done and self._sink is not None:
                sockopts.reset(self._sink)  # closed cleanly, then the rest proved bad
            self.abort(ErrorCode.PROTOCOL_ERROR, str(exc))
            return None

    def _pause_if_congested(self) -> None:
        if self._tx_backlog is not None or self.session.writing_paused:
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
