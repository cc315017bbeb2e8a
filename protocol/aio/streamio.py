"""The async style of a MuxStream: `read`, `write`, `drain`, `write_eof`, `at_eof`.

Data that arrives waits in a queue bounded by the stream window and is credited to the peer
as `read` consumes it; `write` waits while the peer's window or the connection is full. A
mixin of `MuxStream` (stream.py), which owns the state it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ErrorCode
from .streamtypes import StreamResetError

if TYPE_CHECKING:
    import asyncio
    from collections import deque
    from collections.abc import Callable

    from .connection import MuxSession
    from .streamcodec import StreamCodec
    from .streamtypes import StreamTap


class AsyncSide:
    if not TYPE_CHECKING:  # no __dict__ at run time; mypy checks the slots on MuxStream
        __slots__ = ()

    if TYPE_CHECKING:  # MuxStream's state and methods that this side uses
        session: MuxSession
        stream_id: int
        tap: StreamTap | None
        reset_code: int | None
        reset_reason: str
        _codec: StreamCodec | None
        _closed_done: bool
        _rx: deque[bytes] | None
        _rx_bytes: int
        _rx_eof: bool
        _rx_waiter: asyncio.Future[None] | None
        _rx_notify: Callable[[], None] | None
        _tx_backlog: deque[memoryview] | None
        _tx_ended: bool
        _tx_waiter: asyncio.Future[None] | None

        def send(self, data: bytes | memoryview) -> bool: ...
        def send_eof(self) -> None: ...
        def _acknowledge(self, nbytes: int) -> None: ...
        def _inflate(self, data: bytes) -> bytes | None: ...

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to `max_bytes`; b"" at end of stream. Raises StreamResetError after a reset."""
        while (chunk := self.read_nowait(max_bytes)) is None:
            self._rx_waiter = self.session.loop.create_future()
            try:
                await self._rx_waiter  # woken by data, the end or a reset (_wake_rx)
            finally:
                self._rx_waiter = None
        return chunk

    def set_rx_notify(self, callback: Callable[[], None] | None) -> None:
        """Call `callback()` (no argument) whenever data, the end or a reset arrives, instead
        of waking a `read`; the callback then takes the data with `read_nowait`. None stops
        it. For a reader that serves from callbacks (the HTTP vhost's lane)."""
        self._rx_notify = callback

    def read_nowait(self, max_bytes: int) -> bytes | None:
        """Like `read` without waiting: None when nothing is there yet, b"" at the end.
        Raises StreamResetError after a reset once the received data is taken."""
        codec = self._codec
        if codec is not None:
            while not codec.plain:
                if not codec.frames:
                    return self._nowait_end()
                frame = codec.pop()
                plain = self._inflate(frame)
                if plain is None:
                    raise StreamResetError(ErrorCode.PROTOCOL_ERROR, self.reset_reason)
                self._acknowledge(len(frame))
                if self.tap is not None and plain:
                    self.tap.received(plain)
                codec.plain = plain
            out, codec.plain = codec.plain[:max_bytes], codec.plain[max_bytes:]
            return out
        rx = self._rx
        if not rx:
            return self._nowait_end()
        chunk = rx[0]
        if len(chunk) <= max_bytes:
            rx.popleft()
        else:
            rx[0] = chunk[max_bytes:]
            chunk = chunk[:max_bytes]
        if not rx:
            self._rx = None  # an idle stream keeps no queue
        self._rx_bytes -= len(chunk)
        self.session.acknowledge(self.stream_id, len(chunk))
        return chunk

    def _nowait_end(self) -> bytes | None:
        if self.reset_code is not None:
            raise StreamResetError(self.reset_code, self.reset_reason)
        if self._rx_eof or self._closed_done:
            return b""
        return None

    async def write(self, data: bytes | memoryview) -> None:
        """Send all of `data`, waiting while the peer's window or the connection is full."""
        if self.reset_code is not None:
            raise StreamResetError(self.reset_code, self.reset_reason)
        if self._tx_ended or self._closed_done:
            raise BrokenPipeError("stream closed for writing")
        self.send(data)
        await self.drain()

    async def drain(self) -> None:
        while self._tx_backlog is not None or self.session.writing_paused:
            if self.reset_code is not None:
                raise StreamResetError(self.reset_code, self.reset_reason)
            if self._closed_done:
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
        return self._rx_eof or self._closed_done
