"""Integration tests for the HTTP vhost: routing, headers, auth and every error page.

Real sockets on 127.0.0.1 with port 0. The routes' openers dial local backends directly
(`tcp_opener`), standing in for the tunnel. The echo backend answers each request with JSON
describing what it received, plus which backend it is and which TCP connection carried it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from tunnel_server.vhost import (
    ByteStream,
    HTTPRoute,
    HTTPVhostServer,
    UpstreamError,
    VhostRouter,
    tcp_opener,
)

LOOPBACK = "127.0.0.1"
TEST_TIMEOUT_S = 20.0
BACKEND_NAME = web.AppKey("backend_name", str)
CURL_MAX_TIME_S = "15"


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return web.json_response(
        {
            "backend": request.app[BACKEND_NAME],
            "method": request.method,
            "path": request.path_qs,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
            "conn_port": peer[1] if peer else None,
        }
    )


@asynccontextmanager
async def echo_backend(name: str) -> AsyncIterator[int]:
    """An aiohttp server that echoes each request as JSON; yields its port."""
    app = web.Application()
    app[BACKEND_NAME] = name
    app.router.add_route("*", "/{tail:.*}", _echo)
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
    """A plain asyncio server running `handler` per connection; yields its port."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except ConnectionError:
            pass  # the vhost reset the stream: expected in the error-path tests
        finally:
            writer.close()

    server = await asyncio.start_server(run, LOOPBACK, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def route(name: str, port: int, **kw: Any) -> HTTPRoute:
    return HTTPRoute(
        proxy_key=f"client/{name}", proxy_name=name, opener=tcp_opener(LOOPBACK, port), **kw
    )


@asynccontextmanager
async def vhost(*routes: HTTPRoute, **kw: Any) -> AsyncIterator[tuple[HTTPVhostServer, int]]:
    """An HTTP vhost serving `routes`; yields (server, port)."""
    router = VhostRouter(kw.pop("sub_domain_host", None), 1000)
    for r in routes:
        router.add(r)
    server = HTTPVhostServer(router, **kw)
    _, port = await server.start(LOOPBACK, 0)
    try:
        yield server, port
    finally:
        server.close()
        await server.wait_closed()


async def curl(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/curl",
        "--silent",
        "--show-error",
        "--max-time",
        CURL_MAX_TIME_S,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers lowercased, body) from `curl -i` output or a raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def raw_request(port: int, data: bytes, *, read_timeout_s: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and read until the vhost closes it."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_timeout_s):
            return await reader.read(-1)
    finally:
        writer.close()
        await writer.wait_closed()


def headers_of(echo: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in echo["headers"]}


async def test_vhost_http_routes_by_host_with_curl() -> None:
    """curl reaches the backend its Host names, with X-Forwarded-* describing the visitor."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, echo_backend("B") as pb:
            routes = (route("a", pa, domains=["a.test"]), route("b", pb, domains=["*.b.test"]))
            async with vhost(*routes) as (_, port):
                for host, backend in (("a.test", "A"), ("x.b.test:8080", "B")):
                    rc, out, err = await curl(
                        "-H", f"Host: {host}", f"http://{LOOPBACK}:{port}/p?q=1"
                    )
                    assert rc == 0, err
                    echo = json.loads(out)
                    assert echo["backend"] == backend and echo["path"] == "/p?q=1"
                    h = headers_of(echo)
                    assert h["host"] == host
                    assert h["x-forwarded-for"] == LOOPBACK
                    assert h["x-real-ip"] == LOOPBACK
                    assert h["x-forwarded-proto"] == "http"
                    assert h["x-forwarded-host"] == host


async def test_vhost_http_keepalive_multi_host() -> None:
    """One keep-alive connection routes each request on its own, reusing the upstream stream
    while the route stays the same and opening a new one when it changes."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, echo_backend("B") as pb:
            routes = (route("a", pa, domains=["a.test"]), route("b", pb, domains=["b.test"]))
            async with vhost(*routes) as (_, port):

                def run() -> list[tuple[str, int]]:
                    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                    seen = []
                    sock = None
                    for host in ("a.test", "a.test", "b.test", "b.test", "a.test"):
                        conn.request("GET", "/", headers={"Host": host})
                        resp = conn.getresponse()
                        echo = json.loads(resp.read())
                        assert resp.status == 200
                        sock = sock or conn.sock
                        assert conn.sock is sock, "the visitor connection was not kept alive"
                        seen.append((echo["backend"], echo["conn_port"]))
                    conn.close()
                    return seen

                seen = await asyncio.to_thread(run)
                assert [b for b, _ in seen] == ["A", "A", "B", "B", "A"]
                assert seen[0][1] == seen[1][1]  # same upstream stream for the same route
                assert seen[2][1] == seen[3][1]
                assert seen[4][1] != seen[0][1]  # a new stream after the route changed


async def test_vhost_http_header_rules() -> None:
    """hostHeaderRewrite, requestHeaders.set and responseHeaders.set are applied."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            r = route(
                "a",
                pa,
                domains=["a.test"],
                host_header_rewrite="internal.local:9000",
                request_headers_set={"X-From-Tunnel": "yes", "User-Agent": "tunnelkit-test"},
                response_headers_set={"X-Served-By": "tunnelkit", "Server": "hidden"},
            )
            async with vhost(r) as (_, port):
                rc, out, err = await curl("-i", "-H", "Host: a.test", f"http://{LOOPBACK}:{port}/")
                assert rc == 0, err
                status, headers, body = split_response(out)
                assert status == 200
                assert headers["x-served-by"] == "tunnelkit" and headers["server"] == "hidden"
                h = headers_of(json.loads(body))
                assert h["host"] == "internal.local:9000"
                assert h["x-forwarded-host"] == "a.test"
                assert h["x-from-tunnel"] == "yes" and h["user-agent"] == "tunnelkit-test"


async def test_vhost_http_forwarded_for_appends() -> None:
    """An incoming X-Forwarded-For keeps its chain and gets the visitor's IP appended."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, vhost(route("a", pa, domains=["a.test"])) as (_, port):
            _rc, out, _ = await curl(
                "-H",
                "Host: a.test",
                "-H",
                "X-Forwarded-For: 203.0.113.9, 198.51.100.2",
                "-H",
                "X-Real-IP: 6.6.6.6",
                f"http://{LOOPBACK}:{port}/",
            )
            h = headers_of(json.loads(out))
            assert h["x-forwarded-for"] == f"203.0.113.9, 198.51.100.2, {LOOPBACK}"
            assert h["x-real-ip"] == LOOPBACK


async def test_vhost_http_basic_auth() -> None:
    """httpUser/httpPassword: 401 with a Basic challenge until the right credentials come,
    and the credentials are not passed on to the app."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            r = route("a", pa, domains=["a.test"], http_user="alice", http_password="s3cret")
            async with vhost(r) as (_, port):
                url = f"http://{LOOPBACK}:{port}/"
                for extra in ([], ["-u", "alice:wrong"], ["-u", "bob:s3cret"]):
                    _rc, out, _ = await curl("-i", "-H", "Host: a.test", *extra, url)
                    status, headers, body = split_response(out)
                    assert status == 401
                    assert headers["www-authenticate"] == 'Basic realm="tunnelkit"'
                    assert b"s3cret" not in body
                _rc, out, _ = await curl("-i", "-H", "Host: a.test", "-u", "alice:s3cret", url)
                status, _, body = split_response(out)
                assert status == 200
                assert "authorization" not in headers_of(json.loads(body))


async def test_vhost_http_401_then_200_on_one_connection() -> None:
    """A 401 keeps the connection alive, so the browser-style retry reuses it."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            r = route("a", pa, domains=["a.test"], http_user="u", http_password="p")
            async with vhost(r) as (_, port):

                def run() -> tuple[int, int]:
                    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                    conn.request("GET", "/", headers={"Host": "a.test"})
                    first = conn.getresponse()
                    first.read()
                    token = base64.b64encode(b"u:p").decode()
                    conn.request(
                        "GET", "/", headers={"Host": "a.test", "Authorization": f"Basic {token}"}
                    )
                    second = conn.getresponse()
                    second.read()
                    conn.close()
                    return first.status, second.status

                assert await asyncio.to_thread(run) == (401, 200)


async def test_vhost_http_404_unknown_host() -> None:
    """An unknown host gets a 404 page naming it, or custom404Page's content when set."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with vhost() as (_, port):
            _rc, out, _ = await curl("-i", "-H", "Host: nobody.test", f"http://{LOOPBACK}:{port}/")
            status, headers, body = split_response(out)
            assert status == 404 and headers["content-type"].startswith("text/html")
            assert b"nobody.test" in body and b"No tunnel" in body
        async with vhost(custom_404_page="<h1>Nothing here</h1>") as (_, port):
            _rc, out, _ = await curl("-i", "-H", "Host: nobody.test", f"http://{LOOPBACK}:{port}/")
            status, _, body = split_response(out)
            assert status == 404 and body == b"<h1>Nothing here</h1>"


async def test_vhost_http_502_when_opener_fails() -> None:
    """An opener that raises UpstreamError, or a refused local port, gives a 502 page."""

    async def offline(src: tuple[str, int]) -> ByteStream:
        raise UpstreamError("client web-laptop is offline")

    with socket.socket() as s:  # a port with nothing listening
        s.bind((LOOPBACK, 0))
        dead_port = s.getsockname()[1]
    async with asyncio.timeout(TEST_TIMEOUT_S):
        offline_route = HTTPRoute(
            proxy_key="c/off", proxy_name="off", opener=offline, domains=["off.test"]
        )
        async with vhost(offline_route, route("dead", dead_port, domains=["dead.test"])) as (
            _,
            port,
        ):
            _rc, out, _ = await curl("-i", "-H", "Host: off.test", f"http://{LOOPBACK}:{port}/")
            status, _, body = split_response(out)
            assert status == 502 and b"is offline" in body and b"off.test" in body
            _rc, out, _ = await curl("-i", "-H", "Host: dead.test", f"http://{LOOPBACK}:{port}/")
            status, _, body = split_response(out)
            assert status == 502 and b"dead.test" in body


async def test_vhost_http_502_when_upstream_resets() -> None:
    """A backend that reads the request and drops the connection gives a 502 page."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with raw_backend(drop) as pb, vhost(route("r", pb, domains=["r.test"])) as (_, port):
            _rc, out, _ = await curl("-i", "-H", "Host: r.test", f"http://{LOOPBACK}:{port}/")
            status, headers, body = split_response(out)
            assert status == 502 and b"r.test" in body
            assert headers["connection"] == "close"


async def test_vhost_http_504_after_timeout() -> None:
    """A backend that never answers gives a 504 after vhostHTTPTimeout."""
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with raw_backend(silent) as pb:
            async with vhost(route("s", pb, domains=["s.test"]), timeout_s=0.5) as (_, port):
                loop = asyncio.get_running_loop()
                start = loop.time()
                _rc, out, _ = await curl("-i", "-H", "Host: s.test", f"http://{LOOPBACK}:{port}/")
                status, _, body = split_response(out)
                assert status == 504 and b"s.test" in body and b"did not answer" in body
                assert loop.time() - start < 5
            release.set()


async def test_vhost_http_400_malformed_and_listener_survives() -> None:
    """Malformed requests get a 400 and the listener keeps serving."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, vhost(route("a", pa, domains=["a.test"])) as (_, port):
            for bad in (
                b"GARBAGE\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",  # no Host
                b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50,  # TLS on HTTP
            ):
                raw = await raw_request(port, bad)
                assert split_response(raw)[0] == 400, bad
            rc, out, _ = await curl("-H", "Host: a.test", f"http://{LOOPBACK}:{port}/ok")
            assert rc == 0 and json.loads(out)["path"] == "/ok"


async def test_vhost_http_431_header_too_large() -> None:
    """A request head over max_header_bytes gets a 431."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            async with vhost(route("a", pa, domains=["a.test"]), max_header_bytes=8192) as (_, p):
                big = "x" * 10_000
                _rc, out, _ = await curl(
                    "-i", "-H", "Host: a.test", "-H", f"X-Big: {big}", f"http://{LOOPBACK}:{p}/"
                )
                assert split_response(out)[0] == 431


async def test_vhost_http_408_slow_headers() -> None:
    """A head that trickles in past header_timeout_s gets a 408 and a close; a silent
    connection is closed without a response."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            async with vhost(route("a", pa, domains=["a.test"]), header_timeout_s=0.5) as (_, p):
                loop = asyncio.get_running_loop()
                reader, writer = await asyncio.open_connection(LOOPBACK, p)
                start = loop.time()
                writer.write(b"GET / HTTP/1.1\r\nHost: a.te")
                await writer.drain()
                raw = await reader.read(-1)
                assert split_response(raw)[0] == 408
                assert loop.time() - start < 5
                writer.close()
                await writer.wait_closed()
                reader, writer = await asyncio.open_connection(LOOPBACK, p)
                assert await reader.read(-1) == b""
                writer.close()
                await writer.wait_closed()


async def test_vhost_http_pipelined_requests() -> None:
    """Pipelined requests to two hosts are answered in order on one connection."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, echo_backend("B") as pb:
            routes = (route("a", pa, domains=["a.test"]), route("b", pb, domains=["b.test"]))
            async with vhost(*routes) as (_, port):
                raw = await raw_request(
                    port,
                    b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                    b"POST /2 HTTP/1.1\r\nHost: b.test\r\nContent-Length: 3\r\n\r\nabc"
                    b"GET /3 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                )
                bodies = [json.loads(part) for part in _bodies(raw)]
                assert [(b["backend"], b["path"]) for b in bodies] == [
                    ("A", "/1"),
                    ("B", "/2"),
                    ("A", "/3"),
                ]
                assert bodies[1]["body"] == "abc"


def _bodies(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        out.append(rest[:length])
        raw = rest[length:]
    return out


async def test_vhost_http_head_then_get_keepalive() -> None:
    """A HEAD response has no body and the connection carries the next request."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, vhost(route("a", pa, domains=["a.test"])) as (_, port):

            def run() -> tuple[int, bytes, int, dict[str, Any]]:
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                conn.request("HEAD", "/h", headers={"Host": "a.test"})
                head = conn.getresponse()
                head_body = head.read()
                conn.request("GET", "/g", headers={"Host": "a.test"})
                get = conn.getresponse()
                echo = json.loads(get.read())
                conn.close()
                return head.status, head_body, get.status, echo

            head_status, head_body, get_status, echo = await asyncio.to_thread(run)
            assert (head_status, head_body, get_status) == (200, b"", 200)
            assert echo["path"] == "/g"


async def test_vhost_http_retries_when_idle_upstream_closed() -> None:
    """If the app closed the kept-alive upstream while idle, the next GET is retried on a new
    stream instead of failing."""
    served = 0

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        body = f"response {served}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        # then close, as an app with a short keep-alive timeout does

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            raw_backend(one_shot) as pb,
            vhost(route("o", pb, domains=["o.test"])) as (
                _,
                port,
            ),
        ):

            def run() -> list[bytes]:
                conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
                bodies = []
                for _ in range(3):
                    conn.request("GET", "/", headers={"Host": "o.test"})
                    resp = conn.getresponse()
                    assert resp.status == 200
                    bodies.append(resp.read())
                conn.close()
                return bodies

            assert await asyncio.to_thread(run) == [b"response 1", b"response 2", b"response 3"]


async def test_vhost_http_route_removed_gives_404() -> None:
    """Removing a route takes effect for the next request."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            router = VhostRouter(None, 10)
            router.add(route("a", pa, domains=["a.test"]))
            async with HTTPVhostServer(router) as server:
                _, port = await server.start(LOOPBACK, 0)
                url = f"http://{LOOPBACK}:{port}/"
                _rc, out, _ = await curl(
                    "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: a.test", url
                )
                assert out == b"200"
                router.remove("client/a")
                _rc, out, _ = await curl(
                    "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: a.test", url
                )
                assert out == b"404"


async def test_vhost_http_absolute_form_target() -> None:
    """An absolute-form target routes by its authority and reaches the app in origin form."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa, vhost(route("a", pa, domains=["a.test"])) as (_, port):
            raw = await raw_request(
                port,
                b"GET http://a.test/abs?x=1 HTTP/1.1\r\n"
                b"Host: other.test\r\nConnection: close\r\n\r\n",
            )
            status, _, body = split_response(raw)
            assert status == 200 and json.loads(body)["path"] == "/abs?x=1"


async def test_vhost_http_max_connections_503() -> None:
    """Connections over max_connections get a 503 page and are closed."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with vhost(max_connections=1) as (server, port):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            # A full exchange proves the first connection was accepted; a 404 keeps it open.
            writer.write(b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n")
            assert b"404" in await reader.readuntil(b"\r\n\r\n")
            assert server.connections == 1
            raw = await raw_request(port, b"")
            assert split_response(raw)[0] == 503
            assert server.refused_connections == 1
            writer.close()
            await writer.wait_closed()


async def test_vhost_http_on_request_counts_bytes() -> None:
    """The on_request hook gets the proxy name and the bytes moved each way."""
    calls: list[tuple[str, int, int]] = []
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            async with vhost(
                route("web", pa, domains=["a.test"]), on_request=lambda *a: calls.append(a)
            ) as (_, port):
                rc, out, _ = await curl(
                    "-H", "Host: a.test", "-d", "x" * 1000, f"http://{LOOPBACK}:{port}/"
                )
                assert rc == 0
    assert len(calls) == 1
    name, bytes_in, bytes_out = calls[0]
    assert name == "web" and bytes_in > 1000 and bytes_out > len(out)


async def test_vhost_http_close_ends_idle_connections() -> None:
    """close() ends idle keep-alive connections at once and wait_closed() returns."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo_backend("A") as pa:
            router = VhostRouter(None, 10)
            router.add(route("a", pa, domains=["a.test"]))
            server = HTTPVhostServer(router, idle_timeout_s=60)
            _, port = await server.start(LOOPBACK, 0)
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            server.close()
            async with asyncio.timeout(5):
                await server.wait_closed()
                await reader.read(-1)  # the rest of the response, then EOF
            writer.close()
            await writer.wait_closed()


async def test_vhost_http_close_cancels_in_flight_after_grace() -> None:
    """close() lets an in-flight request run for the grace time, then cancels it and resets
    both sides; wait_closed() returns."""
    release = asyncio.Event()
    app_got_request = asyncio.Event()
    app_saw_close = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        app_got_request.set()
        try:
            await reader.read(1)  # returns b"" on close
        except ConnectionResetError:
            pass  # a reset is how an aborted stream ends
        app_saw_close.set()
        await release.wait()

    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with raw_backend(silent) as pb:
            router = VhostRouter(None, 10)
            router.add(route("s", pb, domains=["s.test"]))
            server = HTTPVhostServer(router, timeout_s=60, shutdown_grace_s=0.3)
            _, port = await server.start(LOOPBACK, 0)
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: s.test\r\n\r\n")
            await writer.drain()
            await app_got_request.wait()
            loop = asyncio.get_running_loop()
            start = loop.time()
            server.close()
            async with asyncio.timeout(5):
                await server.wait_closed()
                await app_saw_close.wait()
            assert loop.time() - start >= 0.25
            with pytest.raises(ConnectionResetError):  # cancelled mid-request: a reset
                await reader.read(-1)
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()
            release.set()
