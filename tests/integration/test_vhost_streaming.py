"""Integration tests for bodies through the HTTP vhost: chunked, 100-continue, until-close,
WebSocket, and 64 MiB transfers whose buffering stays bounded.

Real sockets on 127.0.0.1 with port 0; routes dial local backends directly (`tcp_opener`).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from tunnel_server.vhost import HTTPRoute, HTTPVhostServer, VhostRouter, tcp_opener

LOOPBACK = "127.0.0.1"
TEST_TIMEOUT_S = 60.0
BIG_BYTES = 64 * 1024 * 1024
BLOCK = os.urandom(1024 * 1024)  # the big transfers repeat this block
BUFFER_BOUND_BYTES = 2 * 1024 * 1024  # what the vhost may hold for one transfer, in and out


def big_digest() -> str:
    h = hashlib.sha256()
    for _ in range(BIG_BYTES // len(BLOCK)):
        h.update(BLOCK)
    return h.hexdigest()


@asynccontextmanager
async def app_backend(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_backend(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except ConnectionError:
            pass  # the vhost reset the stream: expected in the disconnect test
        finally:
            writer.close()

    server = await asyncio.start_server(run, LOOPBACK, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def vhost(port: int, **kw: Any) -> AsyncIterator[tuple[HTTPVhostServer, int]]:
    router = VhostRouter(None, 10)
    router.add(
        HTTPRoute(
            proxy_key="c/app",
            proxy_name="app",
            opener=tcp_opener(LOOPBACK, port),
            domains=["app.test"],
        )
    )
    server = HTTPVhostServer(router, **kw)
    _, vport = await server.start(LOOPBACK, 0)
    try:
        yield server, vport
    finally:
        server.close()
        await server.wait_closed()


async def curl(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/curl",
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err


class Sampler:
    """Samples the vhost's buffered bytes every few milliseconds while a transfer runs."""

    def __init__(self, server: HTTPVhostServer) -> None:
        self.server = server
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.server.buffered_bytes())
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait({self._task})


async def _stream_chunks(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(f"part{i}:".encode() + body + b"\n")
    await resp.write_eof()
    return resp


async def test_vhost_streaming_chunked_both_ways() -> None:
    """A chunked upload (curl -T -) reaches the app whole; a chunked response streams back."""
    app = web.Application()
    app.router.add_route("PUT", "/chunks", _stream_chunks)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with app_backend(app) as bp, vhost(bp) as (_, port):
            rc, out, err = await curl(
                "-i",
                "-T",
                "-",
                "-H",
                "Host: app.test",
                f"http://{LOOPBACK}:{port}/chunks",
                stdin=b"streamed-body",
            )
            assert rc == 0, err
            head, _, body = out.rpartition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            assert body == b"".join(b"part%d:streamed-body\n" % i for i in range(5))


async def _echo_digest(request: web.Request) -> web.Response:
    h = hashlib.sha256()
    size = 0
    async for piece in request.content.iter_any():
        h.update(piece)
        size += len(piece)
    return web.json_response({"size": size, "sha256": h.hexdigest()})


async def test_vhost_streaming_expect_100_continue_with_curl() -> None:
    """curl's Expect: 100-continue gets the app's 100 through the vhost, then the body flows."""
    app = web.Application()
    app.router.add_route("POST", "/upload", _echo_digest)
    payload = os.urandom(300_000)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with app_backend(app) as bp, vhost(bp) as (_, port):
            loop = asyncio.get_running_loop()
            start = loop.time()
            rc, out, err = await curl(
                "-v",
                "--expect100-timeout",
                "20",
                "-H",
                "Expect: 100-continue",
                "-H",
                "Host: app.test",
                "--data-binary",
                "@-",
                f"http://{LOOPBACK}:{port}/upload",
                stdin=payload,
            )
            assert rc == 0, err
            assert b"< HTTP/1.1 100 Continue" in err
            assert loop.time() - start < 10  # the 100 came from the app, not curl's timer
            assert b'"sha256": "%s"' % hashlib.sha256(payload).hexdigest().encode() in out


async def test_vhost_streaming_until_close_response() -> None:
    """A response delimited by the app closing reaches HTTP/1.1 visitors chunked (the
    connection survives) and HTTP/1.0 visitors until close."""

    async def legacy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(3):
            writer.write(b"line %d\n" % i)
            await writer.drain()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with raw_backend(legacy) as bp, vhost(bp) as (_, port):

            def run() -> list[tuple[str | None, bytes]]:
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                out = []
                for _ in range(2):
                    conn.request("GET", "/", headers={"Host": "app.test"})
                    resp = conn.getresponse()
                    out.append((resp.getheader("Transfer-Encoding"), resp.read()))
                conn.close()
                return out

            expected = b"line 0\nline 1\nline 2\n"
            assert await asyncio.to_thread(run) == [("chunked", expected)] * 2
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
            raw = await reader.read(-1)
            writer.close()
            await writer.wait_closed()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert b"Connection: close" in head and b"chunked" not in head.lower()
            assert body == expected


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("hello from app")
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


async def test_vhost_streaming_websocket() -> None:
    """A WebSocket upgrade through the vhost becomes a raw two-way splice."""
    app = web.Application()
    app.router.add_get("/ws", _websocket)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with app_backend(app) as bp, vhost(bp) as (_, port):
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(
                    f"http://{LOOPBACK}:{port}/ws", headers={"Host": "app.test"}
                ) as ws:
                    assert await ws.receive_str() == "hello from app"
                    for i in range(20):
                        await ws.send_str(f"msg {i}")
                        assert await ws.receive_str() == f"echo:msg {i}"
                    blob = os.urandom(200_000)
                    await ws.send_bytes(blob)
                    assert await ws.receive_bytes() == blob[::-1]
                    await ws.close()


async def test_vhost_streaming_large_upload_bounded() -> None:
    """A 64 MiB upload to a slow app arrives intact while the vhost buffers at most ~2 MiB."""

    async def slow_digest(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        size = 0
        while piece := await request.content.read(256 * 1024):
            h.update(piece)
            size += len(piece)
            if size < 8 * 1024 * 1024:
                await asyncio.sleep(0.005)  # slow at first, so the sender hits backpressure
        return web.json_response({"size": size, "sha256": h.hexdigest()})

    app = web.Application(client_max_size=BIG_BYTES + 1)
    app.router.add_route("POST", "/big", slow_digest)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with app_backend(app) as bp, vhost(bp) as (server, port):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            async with Sampler(server) as sampler:
                writer.write(
                    b"POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n"
                    % BIG_BYTES
                )
                for _ in range(BIG_BYTES // len(BLOCK)):
                    writer.write(BLOCK)
                    await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
            writer.close()
            await writer.wait_closed()
            assert b"200 OK" in head
            assert body.decode() == f'{{"size": {BIG_BYTES}, "sha256": "{big_digest()}"}}'
            print(f"peak buffered: {sampler.peak} bytes")
            assert 0 < sampler.peak <= BUFFER_BOUND_BYTES, sampler.peak


async def test_vhost_streaming_large_download_bounded() -> None:
    """A 64 MiB download to a slow visitor arrives intact while the vhost buffers ~2 MiB."""

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG_BYTES
        await resp.prepare(request)
        for _ in range(BIG_BYTES // len(BLOCK)):
            await resp.write(BLOCK)
        return resp

    app = web.Application()
    app.router.add_get("/big", big)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with app_backend(app) as bp, vhost(bp) as (server, port):
            reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=64 * 1024)
            writer.write(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
            h = hashlib.sha256()
            async with Sampler(server) as sampler:
                head = await reader.readuntil(b"\r\n\r\n")
                assert b"Content-Length: %d" % BIG_BYTES in head
                got = 0
                while got < BIG_BYTES:
                    piece = await reader.read(min(256 * 1024, BIG_BYTES - got))
                    assert piece, "connection closed early"
                    h.update(piece)
                    got += len(piece)
                    if got < 8 * 1024 * 1024:
                        await asyncio.sleep(0.002)  # a slow reader at first
            writer.close()
            await writer.wait_closed()
            assert h.hexdigest() == big_digest()
            print(f"peak buffered: {sampler.peak} bytes")
            assert 0 < sampler.peak <= BUFFER_BOUND_BYTES, sampler.peak


async def test_vhost_streaming_visitor_disconnect_resets_upstream() -> None:
    """When the visitor goes away mid-response, the stream to the app is torn down."""
    app_saw_close = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            for _ in range(100_000):  # bounded: ~6 GiB at most, never reached
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            app_saw_close.set()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with raw_backend(endless) as bp, vhost(bp) as (server, port):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            await reader.readexactly(100_000)
            writer.transport.abort()
            await app_saw_close.wait()
            async with asyncio.timeout(5):
                # The server exposes a count, not an event; the poll is bounded by the timeout.
                while server.connections:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
