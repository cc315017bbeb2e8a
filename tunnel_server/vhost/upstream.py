"""The interface between the vhost listeners and whatever carries bytes to the user's app.

In production the server hands each route an `Opener` that opens a multiplexed stream to the
client, which dials the local service and splices raw bytes. The vhost code only sees a
`ByteStream`. `StreamsByteStream` adapts a plain asyncio TCP connection to the same interface,
for tests and benchmarks that talk to a local backend directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from protocol.errors import TunnelError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 10.0  # bound on the TCP connect of `tcp_opener`
CLOSE_TIMEOUT_S: Final = 5.0  # bound on a graceful close before the stream is reset


class UpstreamError(TunnelError):
    """The upstream could not be reached (client offline, local service refused, ...).

    `reason` is one line, shown to the visitor on the 502 page, so it must hold no secret.
    """

    def __init__(self, reason: str, *, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # the page the visitor gets (403 for an IP rule)


class ByteStream(Protocol):
    """A reliable, ordered, flow-controlled byte stream to the user's app."""

    async def read(self, max_bytes: int) -> bytes:
        """Return up to max_bytes; b"" at EOF. Raises ConnectionResetError if the peer reset."""
        ...

    async def write(self, data: bytes) -> None:
        """Send data, waiting while the peer's window or our buffers are full."""
        ...

    def write_eof(self) -> None:
        """Half-close: no more data from us."""
        ...

    def abort(self) -> None:
        """Reset the stream at once, dropping buffered data."""
        ...

    def close(self) -> None:
        """Close gracefully (idempotent)."""
        ...

    def at_eof(self) -> bool:
        """True once the peer ended its direction (or the stream is gone): not reusable."""
        ...

    async def wait_closed(self) -> None:
        """Wait until close() or abort() has finished."""
        ...


class CallbackStream(ByteStream, Protocol):
    """A `ByteStream` that can also be served from callbacks (a MuxStream; vhost/lane.py)."""

    def set_rx_notify(self, callback: Callable[[], None] | None) -> None:
        """Call `callback()` when data, the end or a reset arrives; None stops it."""
        ...

    def read_nowait(self, max_bytes: int) -> bytes | None:
        """Up to max_bytes now: None if nothing came yet, b"" at the end; raises after a
        reset."""
        ...

    def send(self, data: bytes | memoryview) -> bool:
        """Send without waiting; what the window does not take is kept and sent later."""
        ...


# The argument is the visitor's (source ip, source port), carried to the client for logs.
Opener = Callable[[tuple[str, int]], Awaitable[ByteStream]]


class StreamsByteStream:
    """A `ByteStream` over an asyncio StreamReader/StreamWriter pair (tests, benchmarks)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int) -> bytes:
        return await self._reader.read(max_bytes)

    def at_eof(self) -> bool:
        return self._reader.at_eof() or self._writer.is_closing()

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("stream is closed")
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer.is_closing() or not self._writer.can_write_eof():
            return
        try:
            self._writer.write_eof()
        except OSError as exc:
            # The peer already went away; the reader side will report it.
            logger.debug("write_eof on a dead upstream: %r", exc)

    def abort(self) -> None:
        self._writer.transport.abort()

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError) as exc:
            # A reset while closing is the expected end of an aborted stream.
            logger.debug("upstream closed with %r", exc)


async def close_stream(stream: ByteStream) -> None:
    """Close a stream gracefully; reset it if that takes over CLOSE_TIMEOUT_S."""
    stream.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await stream.wait_closed()
    except TimeoutError:
        logger.debug("upstream close timed out; resetting it")
        stream.abort()


def tcp_opener(host: str, port: int, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Opener:
    """An `Opener` that dials host:port directly over TCP (tests and benchmarks)."""

    async def open_stream(src: tuple[str, int]) -> ByteStream:
        try:
            async with asyncio.timeout(connect_timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=256 * 1024)
        except TimeoutError as exc:
            raise UpstreamError(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc.strerror}") from exc
        return StreamsByteStream(reader, writer)

    return open_stream
