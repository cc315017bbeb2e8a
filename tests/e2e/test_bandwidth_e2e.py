"""transport.bandwidthLimit through the real tunneld and tunnelc: measured over 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.test_plugins_e2e import start_server, toml
from tests.support.echo import pattern_chunks, pattern_digest, tcp_source_server

LIMIT: Final = "1MB"
RATE: Final = 1024 * 1024  # bytes per second
NBYTES: Final = 10 * RATE  # a 10 s transfer
TOLERANCE: Final = 0.10
CHUNK: Final = 256 * 1024

pytestmark = pytest.mark.slow


async def start_limited_client(  # type: ignore[no-untyped-def]
    run_tunnelc, port: int, fingerprint: str, local_port: int, mode: str = "client"
):
    head = toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": "plugin-e2e-token",
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )
    proxy = toml(
        {
            "name": "slow",
            "type": "tcp",
            "localPort": local_port,
            "remotePort": 0,
            "transport.bandwidthLimit": LIMIT,
            "transport.bandwidthLimitMode": mode,
        }
    )
    client = await run_tunnelc(head + "[[proxies]]\n" + proxy)
    return client, await client.proxy_endpoint("slow")


@dataclass
class TimedSink:
    """Counts the bytes of the first connection and when they came."""

    nbytes: int = 0
    first: float = 0.0
    last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                now = time.monotonic()
                if not self.nbytes:
                    self.first = now
                self.nbytes += len(chunk)
                self.last = now
        except ConnectionError:
            pass  # the test aborts its connection on purpose
        finally:
            # Also when the test ends first and cancels this handler: Python 3.11's
            # asyncio.Server closes only the listener, never the connections it accepted.
            writer.transport.abort()
            self.done.set()


@contextlib.asynccontextmanager
async def timed_sink() -> AsyncIterator[tuple[TimedSink, int]]:
    sink = TimedSink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    async with server:
        yield sink, server.sockets[0].getsockname()[1]


def assert_rate(nbytes: int, seconds: float) -> None:
    rate = nbytes / seconds
    assert abs(rate - RATE) <= TOLERANCE * RATE, (
        f"{rate / RATE:.3f} x the limit over {seconds:.2f}s"
    )


@pytest.mark.parametrize("mode", ["client", "server"])
async def test_bandwidth_limit_paces_uploads_within_ten_percent(
    run_tunneld, run_tunnelc, mode: str
) -> None:
    """10 MiB sent as fast as possible reaches the local service at 1MB/s (+-10%), paced by
    the client or, in "server" mode, by tunneld."""
    async with asyncio.timeout(90), timed_sink() as (sink, local_port):
        _, port, fingerprint = await start_server(run_tunneld)
        _, public = await start_limited_client(run_tunnelc, port, fingerprint, local_port, mode)
        _, writer = await asyncio.open_connection("127.0.0.1", public.port)
        started = time.monotonic()
        for chunk in pattern_chunks(NBYTES):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await sink.done.wait()
        writer.close()
        assert sink.nbytes == NBYTES
        assert_rate(NBYTES, sink.last - started)


@pytest.mark.parametrize("mode", ["client", "server"])
async def test_bandwidth_limit_paces_downloads_within_ten_percent(
    run_tunneld, run_tunnelc, mode: str
) -> None:
    """10 MiB the local service sends as fast as it can reach the user at 1MB/s (+-10%)."""
    async with asyncio.timeout(90), tcp_source_server(NBYTES) as source:
        _, port, fingerprint = await start_server(run_tunneld)
        _, public = await start_limited_client(run_tunnelc, port, fingerprint, source.port, mode)
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
        received = bytearray()
        while chunk := await reader.read(CHUNK):
            received += chunk
        elapsed = time.monotonic() - started
        writer.close()
        assert len(received) == NBYTES
        assert hashlib.sha256(received).hexdigest() == pattern_digest(NBYTES)
        assert_rate(NBYTES, elapsed)


async def test_bandwidth_limit_is_shared_by_the_connections_of_a_proxy(
    run_tunneld, run_tunnelc
) -> None:
    """Two downloads at once share the proxy's 1MB/s (frp's limit is per proxy): 4 MiB each
    take about 8 s, not 4."""
    each = 4 * RATE
    async with asyncio.timeout(90), tcp_source_server(each) as source:
        _, port, fingerprint = await start_server(run_tunneld)
        _, public = await start_limited_client(run_tunnelc, port, fingerprint, source.port)

        async def download() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
            total = 0
            while chunk := await reader.read(CHUNK):
                total += len(chunk)
            writer.close()
            return total

        started = time.monotonic()
        sizes = await asyncio.gather(download(), download())
        assert sizes == [each, each]
        assert_rate(2 * each, time.monotonic() - started)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_bandwidth_limit_holds_a_fast_sender_back_instead_of_buffering(
    run_tunneld, run_tunnelc
) -> None:
    """A sender pushing as fast as it can for 3 s gets only about 3 s worth plus the tunnel's
    windows accepted, and tunnelc's memory does not grow with what it was offered."""
    async with asyncio.timeout(90), timed_sink() as (_sink, local_port):
        _, port, fingerprint = await start_server(run_tunneld)
        client, public = await start_limited_client(run_tunnelc, port, fingerprint, local_port)
        client_pid = client.pid
        before = rss_bytes(client_pid)
        _, writer = await asyncio.open_connection("127.0.0.1", public.port)
        accepted = 0
        chunk = b"x" * CHUNK
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                while True:
                    writer.write(chunk)
                    await writer.drain()
                    accepted += len(chunk)
        growth = rss_bytes(client_pid) - before
        writer.transport.abort()
        # 3 s at the limit, plus what the stream window, the session and the kernel's socket
        # buffers on three hops may hold: far below the gigabytes loopback could carry.
        assert accepted <= 3 * RATE + 32 * 1024 * 1024, accepted
        assert growth <= 24 * 1024 * 1024, growth
