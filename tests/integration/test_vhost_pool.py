"""The vhost's keep-alive pool: idle upstreams reused across visitor connections, bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from tunnel_server.vhost.pool import POOL_IDLE_PER_KEY

from .test_vhost_http import (
    LOOPBACK,
    TEST_TIMEOUT_S,
    curl,
    echo_backend,
    raw_backend,
    raw_request,
    route,
    split_response,
    vhost,
)

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CLOSING_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class ConnectionLog:
    """A raw backend's accepted and ended connections, with an event per change."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.accepted = 0
        self.ended = 0
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(self.response)
                await writer.drain()
                if b"close" in self.response:
                    return
        except asyncio.IncompleteReadError:
            pass  # the vhost closed the upstream
        finally:
            self.ended += 1
            self.changed.set()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


def get(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def test_vhost_pool_reuses_upstream_across_visitor_connections() -> None:
    """Three visitor connections one after the other are served by one upstream connection."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            echo_backend("A") as pa,
            vhost(route("a", pa, domains=["a.test"])) as (
                server,
                port,
            ),
        ):
            ports = []
            for _ in range(3):
                rc, out, err = await curl("-H", "Host: a.test", f"http://{LOOPBACK}:{port}/")
                assert rc == 0, err
                ports.append(json.loads(out)["conn_port"])
            assert len(set(ports)) == 1, ports
            assert server.pool.reused == 2


async def test_vhost_pool_skips_upstream_after_connection_close() -> None:
    """A response with `Connection: close` ends its upstream: the next visitor gets a new one."""
    log = ConnectionLog(CLOSING_RESPONSE)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            raw_backend(log.handle) as pa,
            vhost(route("a", pa, domains=["a.test"])) as (
                server,
                port,
            ),
        ):
            for _ in range(2):
                status, _, body = split_response(await raw_request(port, get("a.test")))
                assert (status, body) == (200, b"ok")
            assert log.accepted == 2
            assert server.pool.reused == 0 and len(server.pool) == 0


async def test_vhost_pool_idle_upstream_closed_after_timeout() -> None:
    """An idle pooled upstream is closed after the pool's idle timeout."""
    log = ConnectionLog(RESPONSE)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            raw_backend(log.handle) as pa,
            vhost(route("a", pa, domains=["a.test"])) as (
                server,
                port,
            ),
        ):
            server.pool.idle_timeout_s = 0.2
            status, _, _ = split_response(await raw_request(port, get("a.test")))
            assert status == 200
            await log.wait(lambda: log.ended == 1)  # closed by the pool's timer, not by a visitor
            assert len(server.pool) == 0


async def test_vhost_pool_bounded_per_key() -> None:
    """More visitor connections than the per-key bound: only POOL_IDLE_PER_KEY stay idle."""
    log = ConnectionLog(RESPONSE)
    extra = 4
    async with asyncio.timeout(TEST_TIMEOUT_S), raw_backend(log.handle) as pa:
        async with vhost(route("a", pa, domains=["a.test"])) as (server, port):
            visitors = []
            try:
                for _ in range(POOL_IDLE_PER_KEY + extra):  # all open at once: one upstream each
                    reader, writer = await asyncio.open_connection(LOOPBACK, port)
                    visitors.append((reader, writer))
                    writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                    assert await reader.readexactly(len(RESPONSE)) == RESPONSE
            finally:
                for _, writer in visitors:
                    writer.close()
                    await writer.wait_closed()
            await log.wait(lambda: log.ended == extra)
            assert log.accepted == POOL_IDLE_PER_KEY + extra
            assert len(server.pool) == POOL_IDLE_PER_KEY
        # The listener's close empties the pool.
        await log.wait(lambda: log.ended == POOL_IDLE_PER_KEY + extra)
