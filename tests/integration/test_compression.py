"""Compressed streams (frp's transport.useCompression) through the real server and client.

Bytes are exact both ways; the counters and windows see the compressed bytes; a stalled reader
of compressible data keeps the buffers bounded; a zip bomb resets its stream without growing
memory, and the session and the proxy go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import Final

import pytest
import zstandard

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.compression import MAX_INFLATED_BYTES_PER_FRAME, WINDOW_LOG, ZSTD
from protocol.errors import ErrorCode
from protocol.messages import StreamHeader
from protocol.mux import Role
from protocol.settings import MuxSettings
from tunnel_client.proxyconfig import ProxyConfig
from tunnel_client.proxyoptions import TransportOptions
from tunnel_server.server import TunnelServer

from .conftest import (
    LOOPBACK,
    ClientRunner,
    TCPService,
    buffered_bytes,
    echo_once,
    pattern_chunks,
    pattern_digest,
    port_of,
    read_digest,
    tcp_connect,
    tcp_proxy,
    tcp_service,
    wait_until,
)

MiB: Final = 1024 * 1024
TEST_TIMEOUT_S: Final = 60.0
BULK_BYTES: Final = 32 * MiB
TEXT_LINE: Final = b'{"level":"info","msg":"request served","path":"/api/v1/items","status":200}\n'
TEXT_BYTES: Final = 8 * MiB
STALL_BYTES: Final = 256 * MiB  # zeros a stalled user never reads
# A stalled stream may hold its window (4 MiB compressed), the local socket's high water
# (1 MiB), one inflated frame and the mux's output: far below what the zeros would inflate to.
STALL_BUFFER_LIMIT_BYTES: Final = 12 * MiB
BOMB_PLAIN_BYTES: Final = 512 * MiB  # zeros; a few KiB once compressed
BOMB_PEAK_LIMIT_BYTES: Final = 16 * MiB  # traced allocations while the bomb is refused


def compressed(proxy: ProxyConfig) -> ProxyConfig:
    """The same proxy with transport.useCompression = true."""
    return ProxyConfig(
        name=proxy.name,
        type=proxy.type,
        local_port=proxy.local_port,
        remote_port=proxy.remote_port,
        transport=TransportOptions(use_compression=True),
    )


def bomb_frames() -> list[bytes]:
    """BOMB_PLAIN_BYTES zeros in one zstd block, cut into 64 KiB frames, as a hostile peer
    sends it: the first frame inflates far past MAX_INFLATED_BYTES_PER_FRAME."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=WINDOW_LOG)
    z = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = z.compress(bytes(BOMB_PLAIN_BYTES)) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    return [data[i : i + 65536] for i in range(0, len(data), 65536)]


class _Zeros(asyncio.Protocol):
    """Sends STALL_BYTES zeros as fast as the peer takes them (pauses with its transport)."""

    def __init__(self, service: TCPService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.left = STALL_BYTES
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.service.transports.add(transport)
        self._pump()

    def _pump(self) -> None:
        chunk = bytes(256 * 1024)
        while self.transport is not None and not self.paused and self.left > 0:
            if self.transport.is_closing():
                return
            self.left -= len(chunk)
            self.transport.write(chunk)

    def pause_writing(self) -> None:
        self.paused = True
        self.service.write_paused.set()

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.service.transports.discard(self.transport)
        self.transport = None


def waiting_frames(stream: MuxStream) -> int:
    """Compressed bytes a stream holds un-inflated (reads its codec: no public gauge)."""
    return 0 if stream._codec is None else stream._codec.frames_bytes


def zeros_sent(zeros: TCPService) -> bool:
    """The zero source wrote everything and its socket buffer is empty."""
    return all(
        t.get_write_buffer_size() == 0 and t.get_protocol().left <= 0  # type: ignore[attr-defined]
        for t in zeros.transports
    ) and bool(zeros.transports)


async def test_compression_tcp_proxy_bulk_exact_both_ways(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """32 MiB of incompressible bytes up and back through a compressed tcp proxy arrive whole."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, compressed(tcp_proxy("echo", echo.port)))
        async with tcp_connect(port_of(client.proxy_status["echo"])) as (reader, writer):

            async def upload() -> None:
                for chunk in pattern_chunks(BULK_BYTES):
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(upload())
                received = tg.create_task(read_digest(reader))
        expected = (BULK_BYTES, pattern_digest(BULK_BYTES))
        assert echo.finished == [expected]
        assert received.result() == expected


async def test_compression_text_crosses_compressed_and_counters_see_it(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """8 MiB of log lines echo back exact, and the tunnel carried a small fraction of that:
    the server's per-proxy counters (stream bytes) count what crossed, not what was sent."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, compressed(tcp_proxy("echo", echo.port)))
        text = TEXT_LINE * (TEXT_BYTES // len(TEXT_LINE))
        assert await echo_once(port_of(client.proxy_status["echo"]), text) == text
        counters = server.stats.proxy("echo")
        await wait_until(lambda: counters.connections_active == 0, "the stream closed")
        assert 0 < counters.bytes_in < len(text) // 10
        assert 0 < counters.bytes_out < len(text) // 10


async def test_compression_off_by_default_counts_every_byte(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """Without useCompression the same text crosses byte for byte (the flag is what differs)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        text = TEXT_LINE * 1000
        assert await echo_once(port_of(client.proxy_status["echo"]), text) == text
        counters = server.stats.proxy("echo")
        await wait_until(lambda: counters.connections_active == 0, "the stream closed")
        assert counters.bytes_in == counters.bytes_out == len(text)


async def test_compression_stalled_reader_of_zeros_keeps_buffers_bounded(
    server: TunnelServer, clients: ClientRunner
) -> None:
    """A user that reads none of 256 MiB of zeros (a few KiB compressed) leaves both sessions
    holding at most a window and a frame: frames wait compressed until the socket drains."""
    async with tcp_service(_Zeros) as zeros:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            client = await clients.run(server, compressed(tcp_proxy("zeros", zeros.port)))
            async with tcp_connect(port_of(client.proxy_status["zeros"])) as (reader, _):
                server_session = server.sessions[client.client_id].mux
                stream = server_session.streams()[0]
                # Every zero left the service, and frames wait at the server, compressed.
                await wait_until(
                    lambda: zeros_sent(zeros) and waiting_frames(stream) > 0,
                    "the zeros crossed the tunnel",
                    timeout_s=TEST_TIMEOUT_S / 2,
                )
                held = max(buffered_bytes(server_session), buffered_bytes(client.session))
                assert held < STALL_BUFFER_LIMIT_BYTES
                # The data still flows once the user reads, and is all zeros.
                got = 0
                while got < 8 * MiB:
                    chunk = await reader.read(256 * 1024)
                    assert chunk and chunk.count(0) == len(chunk)
                    got += len(chunk)


async def test_compression_zip_bomb_from_the_server_resets_only_its_stream(
    server: TunnelServer, clients: ClientRunner, echo: TCPService
) -> None:
    """A stream whose first frame inflates to 512 MiB is reset by the client (PROTOCOL_ERROR)
    with less than 16 MiB allocated; the local service sees no byte; the proxy still works."""
    frames = bomb_frames()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        client = await clients.run(server, compressed(tcp_proxy("echo", echo.port)))
        session = server.sessions[client.client_id].mux
        stream = session.open_stream(StreamHeader("echo", "192.0.2.7", 4242, ZSTD))
        await stream.wait_accepted()  # the client dialed the echo service
        tracemalloc.start()
        try:
            for frame in frames[:4]:
                session.send_data(stream.stream_id, frame)
            await stream.wait_closed()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stream.reset_code == ErrorCode.PROTOCOL_ERROR
        assert "MAX_INFLATED_BYTES_PER_FRAME" in stream.reset_reason
        assert peak < BOMB_PEAK_LIMIT_BYTES
        await echo.wait_all_closed()
        assert echo.finished == []  # the service got a reset, not data
        assert not session.closed
        port = port_of(client.proxy_status["echo"])
        assert await echo_once(port, b"still here") == b"still here"


# -- two raw sessions: the async (read/write) style, as the HTTP vhost uses it ------------------


@contextlib.asynccontextmanager
async def session_pair() -> AsyncIterator[tuple[MuxSession, asyncio.Queue[MuxStream]]]:
    """A client MuxSession joined over loopback TCP to a server one that queues (and accepts)
    every stream the client opens."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Queue[MuxStream] = asyncio.Queue()
    accepted: asyncio.Future[MuxSession] = loop.create_future()
    settings = MuxSettings()

    def server_side() -> MuxSession:
        session = MuxSession(Role.SERVER, settings)

        def on_stream(stream: MuxStream) -> None:
            session.accept_stream(stream)
            opened.put_nowait(stream)

        session.on_stream = on_stream
        if not accepted.done():
            accepted.set_result(session)
        return session

    listener = await loop.create_server(server_side, LOOPBACK, 0)
    client: MuxSession | None = None
    try:
        _, client = await loop.create_connection(
            lambda: MuxSession(Role.CLIENT, settings),
            LOOPBACK,
            listener.sockets[0].getsockname()[1],
        )
        await accepted
        yield client, opened
    finally:
        if client is not None:
            client.close()
        if accepted.done():
            accepted.result().close()
        listener.close()
        await listener.wait_closed()


async def read_all(stream: MuxStream) -> bytes:
    out = bytearray()
    while chunk := await stream.read():
        out += chunk
    return bytes(out)


async def test_compression_async_streams_exact_and_windows_count_wire_bytes() -> None:
    """write/read on a compressed stream: 16 MiB of text and 4 MiB of noise both ways arrive
    whole; each side's bytes_out equals the peer's bytes_in, and both are the compressed size."""
    text = TEXT_LINE * (16 * MiB // len(TEXT_LINE))
    noise = b"".join(bytes(c) for c in pattern_chunks(4 * MiB))
    async with asyncio.timeout(TEST_TIMEOUT_S), session_pair() as (client, opened):
        ours = client.open_stream(StreamHeader("p", "192.0.2.1", 1, ZSTD))
        theirs = await opened.get()

        async def send(stream: MuxStream, data: bytes) -> None:
            for i in range(0, len(data), 100_000):
                await stream.write(data[i : i + 100_000])
            stream.write_eof()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(send(ours, text))
            tg.create_task(send(theirs, noise))
            up = tg.create_task(read_all(theirs))
            down = tg.create_task(read_all(ours))
        assert up.result() == text
        assert down.result() == noise
        assert ours.bytes_out == theirs.bytes_in < len(text) // 10
        assert theirs.bytes_out == ours.bytes_in >= len(noise)  # noise does not shrink


@pytest.mark.parametrize("kind", ["bomb", "corrupt"])
async def test_compression_async_reader_refuses_bomb_and_corrupt_data(kind: str) -> None:
    """read() on a stream fed a zip bomb or garbage raises StreamResetError(PROTOCOL_ERROR),
    the sender's stream is reset too, and the session lives on."""
    async with asyncio.timeout(TEST_TIMEOUT_S), session_pair() as (client, opened):
        ours = client.open_stream(StreamHeader("p", "192.0.2.1", 1, ZSTD))
        theirs = await opened.get()
        payload = bomb_frames()[0] if kind == "bomb" else b"\xffnot deflate at all" * 10
        client.send_data(ours.stream_id, payload)
        tracemalloc.start()
        try:
            with pytest.raises(StreamResetError) as caught:
                await theirs.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert caught.value.code == ErrorCode.PROTOCOL_ERROR
        assert peak < MAX_INFLATED_BYTES_PER_FRAME * 8
        await ours.wait_closed()
        assert ours.reset_code == ErrorCode.PROTOCOL_ERROR
        again = client.open_stream(StreamHeader("p", "192.0.2.1", 2, ZSTD))
        peer = await opened.get()
        await again.write(b"fine")
        again.write_eof()
        assert await read_all(peer) == b"fine"
        peer.close()
