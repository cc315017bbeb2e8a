"""In-process services on 127.0.0.1:0 for tests: TCP/UDP echo, and a TCP sink and source.

All are `asyncio.Protocol` based and pass backpressure through (an echo connection stops
reading while its own writes are paused), so a slow peer never grows our buffers. Each is an
async context manager that closes its listener and every accepted connection on exit.

The payload for big transfers is a repeating pseudo-random pattern: `pattern_digest(n)`
gives the SHA-256 of its first n bytes, so a test can check a transfer without keeping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, cast

LOOPBACK: Final = "127.0.0.1"
CHUNK_BYTES: Final = 256 * 1024  # pattern block, also the write size of sources
_PATTERN: Final = random.Random(0x7E11).randbytes(CHUNK_BYTES)  # deterministic by seed
MAX_RESULTS: Final = 1024  # finished sink connections kept; later ones are dropped
IO_TIMEOUT_S: Final = 60.0  # default deadline for the client helpers below


def pattern_chunks(nbytes: int) -> Iterator[bytes]:
    """The first `nbytes` of the test pattern, in chunks of at most CHUNK_BYTES."""
    remaining = nbytes
    while remaining > 0:
        chunk = _PATTERN[: min(remaining, CHUNK_BYTES)]
        remaining -= len(chunk)
        yield chunk


def pattern_digest(nbytes: int) -> str:
    """SHA-256 hex digest of the first `nbytes` of the pattern."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(nbytes):
        digest.update(chunk)
    return digest.hexdigest()


class _Connections:
    """The transports a server accepted, so that closing the server closes them too."""

    def __init__(self) -> None:
        self.open: set[asyncio.BaseTransport] = set()
        self.accepted = 0
        self.closed = False

    def add(self, transport: asyncio.BaseTransport) -> None:
        self.accepted += 1
        if self.closed:  # accepted just before the listener closed: never left open
            transport.abort()
            return
        self.open.add(transport)

    def close_all(self) -> None:
        # abort(), not close(): close() waits to flush, and a transport still waiting when the
        # test's loop closes is never closed at all (a ResourceWarning in a later test).
        self.closed = True
        for transport in list(self.open):
            transport.abort()
        self.open.clear()


@contextlib.asynccontextmanager
async def _tcp_listener(
    factory: Callable[[], asyncio.Protocol], connections: _Connections
) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        connections.close_all()
        await server.wait_closed()


# -- TCP echo ------------------------------------------------------------------------------


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._connections.add(transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def eof_received(self) -> bool:
        # Returning False closes the transport once what was echoed is flushed: the peer
        # sees every byte and then EOF, which is what half-close tests look for.
        return False

    # The echo's own writes back up: stop reading until they drain (backpressure).
    def pause_writing(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.open.discard(self._transport)


@dataclass(frozen=True, slots=True)
class TCPService:
    port: int
    connections: _Connections = field(repr=False)
    host: str = LOOPBACK

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self.connections.accepted


@contextlib.asynccontextmanager
async def tcp_echo_server() -> AsyncIterator[TCPService]:
    """A TCP echo server; half-close is echoed back after the data."""
    connections = _Connections()
    async with _tcp_listener(lambda: _EchoProtocol(connections), connections) as port:
        yield TCPService(port, connections)


# -- UDP echo ------------------------------------------------------------------------------


class _UDPEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        # Set by udp_echo_server from create_datagram_endpoint's typed result: on 3.11 the
        # transport given to connection_made is not a DatagramTransport instance.
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        assert self.transport is not None
        self.received += 1
        self.transport.sendto(data, addr)


@dataclass(frozen=True, slots=True)
class UDPService:
    port: int
    protocol: _UDPEcho = field(repr=False)
    host: str = LOOPBACK

    @property
    def received(self) -> int:
        """Datagrams received (and echoed) so far."""
        return self.protocol.received


@contextlib.asynccontextmanager
async def udp_echo_server() -> AsyncIterator[UDPService]:
    """A UDP server that sends every datagram back to its sender."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_UDPEcho, local_addr=(LOOPBACK, 0))
    protocol.transport = transport
    try:
        yield UDPService(transport.get_extra_info("sockname")[1], protocol)
    finally:
        transport.close()


# -- TCP sink ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What one connection to a sink delivered before its EOF."""

    nbytes: int
    sha256: str


class _SinkProtocol(asyncio.Protocol):
    def __init__(self, connections: _Connections, results: asyncio.Queue[SinkResult]) -> None:
        self._connections = connections
        self._results = results
        self._digest = hashlib.sha256()
        self._nbytes = 0
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._connections.add(transport)

    def data_received(self, data: bytes) -> None:
        self._nbytes += len(data)
        self._digest.update(data)

    def eof_received(self) -> bool:
        with contextlib.suppress(asyncio.QueueFull):  # drop with no reader: MAX_RESULTS
            self._results.put_nowait(SinkResult(self._nbytes, self._digest.hexdigest()))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.open.discard(self._transport)


@dataclass(frozen=True, slots=True)
class SinkService:
    port: int
    results: asyncio.Queue[SinkResult] = field(repr=False)
    host: str = LOOPBACK

    async def next_result(self, timeout_s: float = IO_TIMEOUT_S) -> SinkResult:
        """The next connection to finish sending (in EOF order)."""
        async with asyncio.timeout(timeout_s):
            return await self.results.get()


@contextlib.asynccontextmanager
async def tcp_sink_server() -> AsyncIterator[SinkService]:
    """A TCP server that reads everything, hashing it; reports each connection at its EOF."""
    connections = _Connections()
    results: asyncio.Queue[SinkResult] = asyncio.Queue(maxsize=MAX_RESULTS)
    async with _tcp_listener(lambda: _SinkProtocol(connections, results), connections) as port:
        yield SinkService(port, results)


# -- TCP source ----------------------------------------------------------------------------


class _SourceProtocol(asyncio.Protocol):
    """Writes the pattern as fast as the peer reads it, then closes."""

    def __init__(self, connections: _Connections, nbytes: int) -> None:
        self._connections = connections
        self._chunks = pattern_chunks(nbytes)
        self._transport: asyncio.Transport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(transport)
        self._pump()

    def _pump(self) -> None:
        assert self._transport is not None
        while not self._paused and not self._transport.is_closing():
            chunk = next(self._chunks, None)
            if chunk is None:
                self._transport.close()  # flushes, then FIN
                return
            self._transport.write(chunk)  # may call pause_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.open.discard(self._transport)


@contextlib.asynccontextmanager
async def tcp_source_server(nbytes: int) -> AsyncIterator[TCPService]:
    """A TCP server that sends `nbytes` of the pattern to each connection, then closes it."""
    connections = _Connections()
    async with _tcp_listener(lambda: _SourceProtocol(connections, nbytes), connections) as port:
        yield TCPService(port, connections)


# -- client helpers ------------------------------------------------------------------------


async def send_pattern(host: str, port: int, nbytes: int, timeout_s: float = IO_TIMEOUT_S) -> None:
    """Connect, send `nbytes` of the pattern, half-close, and wait for the peer to close."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for chunk in pattern_chunks(nbytes):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            while await reader.read(CHUNK_BYTES):  # discard anything the peer sends back
                pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):  # the peer may reset at close
                await writer.wait_closed()


async def receive_digest(host: str, port: int, timeout_s: float = IO_TIMEOUT_S) -> SinkResult:
    """Connect and read until EOF; return how much arrived and its SHA-256."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            digest = hashlib.sha256()
            nbytes = 0
            while chunk := await reader.read(CHUNK_BYTES):
                nbytes += len(chunk)
                digest.update(chunk)
            return SinkResult(nbytes, digest.hexdigest())
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):  # the peer may reset at close
                await writer.wait_closed()
