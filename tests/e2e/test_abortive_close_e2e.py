"""tunneld's tcp proxy listeners are abortive (accepted visitors inherit SO_LINGER 0): every
clean end through the real tunneld and tunnelc must still reach the visitor as all its bytes
and a FIN, never an RST that drops what its kernel had not sent yet (docs/resilience.md)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

from tests.support.echo import pattern_chunks, pattern_digest

from .conftest import TunnelLauncher
from .test_tcp_e2e import client_toml, server_toml, tcp_proxy

LOOPBACK: Final = "127.0.0.1"
BODY_BYTES: Final = 6 << 20  # more than the stream window and both ends' socket buffers
UPLOAD_BYTES: Final = 3 << 20
SLOW_READ_BYTES: Final = 64 << 10  # the slow visitor reads this much per pause
SLOW_READ_PAUSE_S: Final = 0.002
TEST_TIMEOUT_S: Final = 60.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def local_service(handler: Handler) -> AsyncIterator[int]:
    """A local TCP service running `handler` per connection, each closed with FIN (graceful)
    when the handler returns; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            tasks.discard(task)

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def answer_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request to its end (counting it), answers the count and a large body."""
    count = 0
    while chunk := await reader.read(1 << 16):
        count += len(chunk)
    writer.write(b"%d\n" % count)
    for chunk in pattern_chunks(BODY_BYTES):
        writer.write(chunk)
        await writer.drain()


async def answer_without_waiting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answers a large body as soon as the first line arrives, then closes."""
    await reader.readline()
    for chunk in pattern_chunks(BODY_BYTES):
        writer.write(chunk)
        await writer.drain()


async def read_slowly(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Reads to EOF in small pieces with pauses; returns the size and SHA-256 of the body."""
    digest = hashlib.sha256()
    total = 0
    while chunk := await reader.read(SLOW_READ_BYTES):
        digest.update(chunk)
        total += len(chunk)
        await asyncio.sleep(SLOW_READ_PAUSE_S)
    return total, digest.hexdigest()


@asynccontextmanager
async def tunnel_to(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher, port: int
) -> AsyncIterator[int]:
    """The real tunneld and tunnelc with one tcp proxy to `port`; yields its public port."""
    server = await run_tunneld(server_toml())
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    client = await run_tunnelc(client_toml(control.port, fingerprint, tcp_proxy("svc", port)))
    public = await client.proxy_endpoint("svc")
    yield public.port


async def test_abortive_listener_visitor_half_close_then_large_answer_arrives_whole(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """A visitor uploads, half-closes and reads the service's large answer slowly: every byte
    and then EOF arrive (the clean close after both FINs is not an RST)."""
    async with asyncio.timeout(TEST_TIMEOUT_S), local_service(answer_body) as port:
        async with tunnel_to(run_tunneld, run_tunnelc, port) as public:
            reader, writer = await asyncio.open_connection(LOOPBACK, public)
            try:
                for chunk in pattern_chunks(UPLOAD_BYTES):
                    writer.write(chunk)
                    await writer.drain()
                writer.write_eof()
                assert await reader.readline() == b"%d\n" % UPLOAD_BYTES
                assert await read_slowly(reader) == (BODY_BYTES, pattern_digest(BODY_BYTES))
            finally:
                writer.close()
                await writer.wait_closed()


async def test_abortive_listener_service_closes_under_a_slow_reader_loses_nothing(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher
) -> None:
    """The service sends a large body and closes while the visitor still reads slowly (its
    direction open): the visitor gets every byte, then EOF; its own close after that ends
    the stream cleanly, and a second visitor is served the same way."""
    async with asyncio.timeout(TEST_TIMEOUT_S), local_service(answer_without_waiting) as port:
        async with tunnel_to(run_tunneld, run_tunnelc, port) as public:
            for _ in range(2):
                reader, writer = await asyncio.open_connection(LOOPBACK, public)
                try:
                    writer.write(b"GET\n")
                    body = await read_slowly(reader)
                    assert body == (BODY_BYTES, pattern_digest(BODY_BYTES))
                finally:
                    writer.close()
                    await writer.wait_closed()
