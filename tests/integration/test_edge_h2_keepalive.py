"""HTTP/2 visitors reuse upstream HTTP/1.1 connections (edge/upstreams.py): curl --http2 on
one side, an HTTP/1.1 app on 127.0.0.1 on the other, which counts the connections it accepts
and can misbehave the ways real apps do (closing idle connections, Connection: close, extra
bytes after a response)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import h2.config
import h2.connection
import pytest

from tests.integration.test_edge_listener import edge_to
from tests.support.curl import curl, resolve
from tunnel_server.edge.h2conn import H2Service
from tunnel_server.edge.upstreams import UpstreamPool

LOOPBACK: Final = "127.0.0.1"
TEST_TIMEOUT_S: Final = 60.0
HOST: Final = "web.edge.test"


class App:
    """A small HTTP/1.1 server: answers each request with its method, path and body length.

    `mode` picks a misbehaviour: "ok", "close" (Connection: close), "extra" (bytes after each
    response), "drop-second" (reads the 2nd request on a connection, then closes unanswered),
    "hold" (answers only once `release` is set).
    """

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.connections = 0
        self.used_connections = 0  # connections that carried at least one request
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.release = asyncio.Event()
        self.held = 0  # requests waiting for `release`
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self.server is not None
        self.release.set()
        self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                body = b""
                if "content-length" in fields:
                    body = await reader.readexactly(int(fields["content-length"]))
                elif fields.get("transfer-encoding") == "chunked":
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                served += 1
                self.used_connections += served == 1
                if self.mode == "drop-second" and served == 2:
                    return
                self.requests += 1
                if self.mode == "hold":
                    self.held += 1
                    await self.release.wait()
                text = f"{method} {path} {len(body)}".encode()
                close = self.mode == "close"
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (
                    len(text),
                    b"Connection: close\r\n" if close else b"",
                    text,
                )
                if self.mode == "extra":
                    answer += b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsurplus"
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def h2_edge(
    tmp_path: Path, app: App, pool: UpstreamPool
) -> AsyncIterator[tuple[int, Path, H2Service]]:
    """An edge terminating `*.edge.test` whose h2 service routes to `app` through `pool`."""
    app_port = await app.start()
    try:
        async with edge_to(tmp_path, app_port, pool=pool) as (_, port, ca, service):
            yield port, ca, service
    finally:
        await app.close()


def curl_options(port: int, ca: Path) -> list[str]:
    """h2 to the edge, trusting its CA; each transfer ends with " CODE VERSION"."""
    write_out = " %{http_code} %{http_version}\\n"
    return ["--http2", "--cacert", str(ca), *resolve(HOST, port), "-w", write_out]


async def h2_curl(port: int, ca: Path, *args: str) -> list[str]:
    """curl --http2 over one connection; each transfer's "body code version" line."""
    result = await curl(*curl_options(port, ca), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def urls(port: int, count: int, path: str = "/r") -> list[str]:
    return [f"https://{HOST}:{port}{path}{n}" for n in range(count)]


async def test_edge_h2_keepalive_sequential_requests_share_one_app_connection(
    tmp_path: Path,
) -> None:
    """Twenty GETs and POSTs one after another over h2 reach the app on one connection."""
    app = App()
    pool = UpstreamPool()
    async with asyncio.timeout(TEST_TIMEOUT_S), h2_edge(tmp_path, app, pool) as (port, ca, _):
        lines = await h2_curl(port, ca, *urls(port, 10))
        assert lines == [f"GET /r{n} 0 200 2" for n in range(10)]
        posts: list[str] = []
        for url in urls(port, 10, "/p"):  # --next: each transfer its own body, one connection
            posts += [*curl_options(port, ca), "-d", "x" * 1000, url, "--next"]
        lines = await h2_curl(port, ca, *posts[:-1])
        assert lines == [f"POST /p{n} 1000 200 2" for n in range(10)]
        assert app.connections == 1
        assert pool.reused == 19 and pool.idle == 1


async def test_edge_h2_keepalive_parallel_streams_stay_within_the_pool_bounds(
    tmp_path: Path,
) -> None:
    """Forty parallel streams open at most forty app connections; afterwards the pool keeps at
    most max_per_route idle, closes the rest, and closes the kept ones once they idle out."""
    app = App()
    pool = UpstreamPool(max_per_route=4, max_total=8, idle_timeout_s=1.0)
    async with asyncio.timeout(TEST_TIMEOUT_S), h2_edge(tmp_path, app, pool) as (port, ca, _):
        args = ["--parallel", "--parallel-max", "40"]
        for url in urls(port, 40):
            args += ["-o", "/dev/null", url]
        lines = await h2_curl(port, ca, *args)
        assert lines == [" 200 2"] * 40
        assert app.requests == 40
        assert pool.idle <= 4
        assert pool.kept - pool.evicted - pool.reused - pool.expired == pool.idle
        assert app.connections <= 40
        while pool.idle:  # noqa: ASYNC110 (the pool's own timer; polled, bounded by the timeout)
            await asyncio.sleep(0.05)
        assert pool.expired >= 1
        assert await h2_curl(port, ca, *urls(port, 1)) == ["GET /r0 0 200 2"]


async def test_edge_h2_keepalive_retries_a_get_on_a_stale_connection(tmp_path: Path) -> None:
    """An app that closes a kept connection instead of answering: a GET is sent again on a new
    connection and succeeds; a POST (its body is gone) is not repeated and gets a 502."""
    app = App("drop-second")
    pool = UpstreamPool()
    async with asyncio.timeout(TEST_TIMEOUT_S), h2_edge(tmp_path, app, pool) as (port, ca, _):
        lines = await h2_curl(port, ca, *urls(port, 4))
        assert lines == [f"GET /r{n} 0 200 2" for n in range(4)]
        assert app.requests == 4
        assert app.connections >= 4  # every second request on a connection was dropped
        lines = await h2_curl(port, ca, f"https://{HOST}:{port}/first")
        lines += await h2_curl(
            port, ca, "-o", "/dev/null", "-d", "once", f"https://{HOST}:{port}/p"
        )
        assert lines[0] == "GET /first 0 200 2"
        assert lines[1] == " 502 2"
        assert app.requests == 5  # the POST reached the app once, and was not repeated


async def test_edge_h2_keepalive_not_reused_after_close_or_extra_bytes(tmp_path: Path) -> None:
    """Connection: close, or bytes past the response, end reuse: each request gets a new
    connection and the visitor still gets exactly its own response."""
    for mode in ("close", "extra"):
        (tmp_path / mode).mkdir()
        app = App(mode)
        pool = UpstreamPool()
        async with (
            asyncio.timeout(TEST_TIMEOUT_S),
            h2_edge(tmp_path / mode, app, pool) as (
                port,
                ca,
                _,
            ),
        ):
            lines = await h2_curl(port, ca, *urls(port, 5))
            assert lines == [f"GET /r{n} 0 200 2" for n in range(5)], mode
            assert app.connections == 5, mode
            assert pool.reused == 0 and pool.idle == 0, mode


async def test_edge_h2_keepalive_head_is_not_reused_and_closed_pool_keeps_nothing(
    tmp_path: Path,
) -> None:
    """After HEAD the app connection is not reused (its announced body never comes), and a
    closed pool closes what it is given."""
    app = App()
    pool = UpstreamPool()
    async with asyncio.timeout(TEST_TIMEOUT_S), h2_edge(tmp_path, app, pool) as (port, ca, svc):
        lines = await h2_curl(port, ca, "-I", f"https://{HOST}:{port}/h")
        assert lines[-1] == " 200 2"
        assert pool.idle == 0
        pool.close()
        assert await h2_curl(port, ca, *urls(port, 2)) == [f"GET /r{n} 0 200 2" for n in range(2)]
        assert pool.idle == 0 and app.connections == 3
        assert svc.pool is pool


async def test_edge_h2_visitor_goaway_mid_response_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A visitor that sends GOAWAY while its streams wait for the app: when the app answers,
    those streams end quietly (no error with a traceback, no write after close)."""
    caplog.set_level(logging.DEBUG, logger="tunnel_server.edge")
    app = App("hold")
    pool = UpstreamPool()
    async with asyncio.timeout(TEST_TIMEOUT_S), h2_edge(tmp_path, app, pool) as (port, ca, _):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        _reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname=HOST
        )
        try:
            client = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None)
            )
            client.initiate_connection()
            for n in range(3):
                request = [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", HOST.encode()),
                    (b":path", b"/held%d" % n),
                ]
                client.send_headers(1 + 2 * n, request, end_stream=True)
            writer.write(client.data_to_send())
            while app.held < 3:  # noqa: ASYNC110 (the app counts; bounded by the timeout)
                await asyncio.sleep(0.05)
            client.close_connection()
            writer.write(client.data_to_send())
            await writer.drain()
            # Not reading from here on, the visitor never answers our TLS close, so its
            # connection stays half-closed while the app answers the three streams.
            writer.transport.pause_reading()
            while not any("sent GOAWAY" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the edge read the GOAWAY; bounded by the timeout
            app.release.set()
            while sum("failed" in r.getMessage() for r in caplog.records) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # each stream ends; bounded by the timeout
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
