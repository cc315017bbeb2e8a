"""The vhost forwards a plain request head as the visitor sent it, plus its own headers, and
rebuilds every other one: the app sees the exact bytes, and the server's `raw_heads` counter
shows which path each request took.

Real sockets on 127.0.0.1: a raw backend that records each request head byte for byte and
answers a fixed keep-alive response.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tunnel_server.vhost import HTTPVhostServer

from .test_vhost_http import LOOPBACK, raw_backend, route, vhost

TEST_TIMEOUT_S = 20.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OWN = (
    b'Forwarded: for=%b;host="a.test";proto=http\r\n'
    b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.test\r\n"
    b"X-Real-IP: %b\r\n\r\n"
)


@asynccontextmanager
async def recording_backend() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A backend that keeps each request head it gets (no bodies) and answers 200."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            writer.write(RESPONSE)
            await writer.drain()

    async with raw_backend(handle) as port:
        yield port, heads


async def exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send each request on one connection, reading its whole response before the next."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: " in head, head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            answers.append(head + await reader.readexactly(length))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


def own_headers() -> bytes:
    ip = LOOPBACK.encode()
    return OWN % (b'"' + ip + b'"', ip, ip)


async def run(requests: list[bytes], **route_kw: Any) -> tuple[HTTPVhostServer, list[bytes]]:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with recording_backend() as (backend, heads):
            async with vhost(route("a", backend, domains=["a.test"], **route_kw)) as (
                server,
                port,
            ):
                answers = await exchange(port, requests)
                assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers), answers
                return server, heads


async def test_raw_head_plain_requests_reach_the_app_byte_for_byte() -> None:
    """Plain keep-alive requests (the first and the lane's) arrive as sent, plus the vhost's
    own headers; each took the raw path."""
    one = b"GET /a?x=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n"
    two = b"GET /b HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nCookie: c=1\r\n\r\n"
    server, heads = await run([one, two, one])
    own = own_headers()
    assert heads == [one[:-2] + own, two[:-2] + own, one[:-2] + own]
    assert server.raw_heads == 3


UNUSUAL = {
    "visitor x-forwarded-for": b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 6.6.6.7\r\n",
    "visitor x-real-ip": b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Real-IP: 6.6.6.6\r\n",
    "visitor forwarded": b"GET / HTTP/1.1\r\nHost: a.test\r\nForwarded: for=6.6.6.6\r\n",
    "connection header": b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-S\r\n",
    "dot segments": b"GET /x/../admin HTTP/1.1\r\nHost: a.test\r\n",
    "encoded unreserved": b"GET /%61dmin HTTP/1.1\r\nHost: a.test\r\n",
    "absolute form": b"GET http://a.test/p HTTP/1.1\r\nHost: other.test\r\n",
    "http/1.0 keep-alive": b"GET / HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n",
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
async def test_raw_head_unusual_request_is_rebuilt(name: str) -> None:
    """An unusual request goes the rebuild's way: the app never sees what the vhost owns."""
    request = UNUSUAL[name] + b"\r\n"
    server, heads = await run([request])
    assert server.raw_heads == 0
    (head,) = heads
    assert head.startswith((b"GET / HTTP/1.1\r\n", b"GET /admin HTTP/1.1\r\n", b"GET /p "))
    lowered = head.lower()
    assert b"6.6.6.6" not in head and b"connection:" not in lowered and b"x-s" not in lowered
    assert lowered.count(b"\r\nhost: ") == 1 and b"\r\nhost: a.test\r\n" in lowered
    for own in (b"forwarded", b"x-forwarded-for", b"x-real-ip", b"x-forwarded-host"):
        assert lowered.count(b"\r\n" + own + b": ") == 1
    # a visitor's chain is kept and the visitor's address appended
    xff = b"6.6.6.7, " if name == "visitor x-forwarded-for" else b""
    assert b"\r\nX-Forwarded-For: " + xff + LOOPBACK.encode() + b"\r\n" in head


@pytest.mark.parametrize(
    "options",
    [
        {"host_header_rewrite": "inside.local"},
        {"request_headers_set": {"User-Agent": "set-by-route"}},
        {"http_user": "u", "http_password": "p"},
    ],
)
async def test_raw_head_route_rules_force_the_rebuild(options: dict[str, Any]) -> None:
    """A route that rewrites the host, sets headers or checks basic auth gets rebuilt heads,
    with its rules applied and the visitor's credentials stripped."""
    request = b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: visitor\r\n"
    request += b"Authorization: Basic dTpw\r\n\r\n"  # u:p
    server, heads = await run([request, request], **options)
    assert server.raw_heads == 0
    for head in heads:
        lowered = head.lower()
        if "host_header_rewrite" in options:
            assert b"\r\nhost: inside.local\r\n" in lowered
        if "request_headers_set" in options:
            assert b"user-agent: set-by-route" in lowered and b"visitor" not in lowered
        if "http_user" in options:
            assert b"authorization" not in lowered


async def test_raw_head_duplicate_host_still_refused() -> None:
    """Two Host headers in a head that is otherwise plain are refused with 400, not forwarded."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with recording_backend() as (backend, heads):
            async with vhost(route("a", backend, domains=["a.test"])) as (server, port):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                try:
                    writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
                    answer = await reader.read(-1)
                finally:
                    writer.close()
                    await writer.wait_closed()
                assert answer.startswith(b"HTTP/1.1 400 ")
                assert heads == [] and server.raw_heads == 0


# --- the per-connection route cache (http_proxy.prepare) ------------------------------------


class Conn:
    """One keep-alive visitor connection: send a request, read its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        return int(head.split(b" ", 2)[1]), body


@asynccontextmanager
async def visitor(port: int) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()
        await writer.wait_closed()


@asynccontextmanager
async def named_backend(name: bytes) -> AsyncIterator[int]:
    """A backend that answers every request with its name."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))
            await writer.drain()

    async with raw_backend(handle) as port:
        yield port


def get(path: bytes = b"/", host: bytes = b"a.test", extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (path, host, extra)


async def test_route_cache_follows_route_changes_on_one_connection() -> None:
    """Each change of the router between two requests of one connection is seen by the next:
    a replaced route, a longer location added, the route removed (404)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with named_backend(b"A") as pa, named_backend(b"B") as pb:
            async with vhost(route("a", pa, domains=["a.test"])) as (server, port):
                router = server._router
                async with visitor(port) as conn:
                    assert await conn.ask(get(b"/x")) == (200, b"A")
                    assert await conn.ask(get(b"/x")) == (200, b"A")
                    router.add(route("a", pb, domains=["a.test"]))  # replaced: same key
                    assert await conn.ask(get(b"/x")) == (200, b"B")
                    router.add(route("x", pa, domains=["a.test"], locations=["/x"]))
                    assert await conn.ask(get(b"/x")) == (200, b"A")
                    assert await conn.ask(get(b"/y")) == (200, b"B")
                    router.remove("client/x")
                    router.remove("client/a")
                    status, _ = await conn.ask(get(b"/x"))
                    assert status == 404
                assert server.raw_heads == 5


async def test_route_cache_each_host_and_path_routed_on_its_own() -> None:
    """Requests alternating hosts and locations on one connection reach their own routes."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with named_backend(b"A") as pa, named_backend(b"B") as pb:
            routes = (
                route("a", pa, domains=["a.test"]),
                route("b", pb, domains=["b.test"]),
                route("ab", pb, domains=["a.test"], locations=["/api"]),
            )
            async with vhost(*routes) as (_, port), visitor(port) as conn:
                for path, host, want in [
                    (b"/", b"a.test", b"A"),
                    (b"/", b"b.test", b"B"),
                    (b"/", b"a.test", b"A"),
                    (b"/api/v", b"a.test", b"B"),
                    (b"/", b"a.test", b"A"),
                    (b"/", b"A.TEST", b"A"),
                ]:
                    assert await conn.ask(get(path, host)) == (200, want)
                status, _ = await conn.ask(get(b"/", b"c.test"))
                assert status == 404


async def test_route_cache_not_used_for_route_by_http_user() -> None:
    """With an Authorization header the route depends on the user: each request is looked
    up, so one connection switching users reaches each user's route."""
    alice = b"Authorization: Basic " + base64.b64encode(b"alice:pw") + b"\r\n"
    bob = b"Authorization: Basic " + base64.b64encode(b"bob:pw") + b"\r\n"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with named_backend(b"A") as pa, named_backend(b"B") as pb:
            routes = (
                route("all", pa, domains=["a.test"]),
                route("bob", pb, domains=["a.test"], route_by_http_user="bob"),
            )
            async with vhost(*routes) as (_, port), visitor(port) as conn:
                assert await conn.ask(get()) == (200, b"A")
                assert await conn.ask(get(extra=bob)) == (200, b"B")
                assert await conn.ask(get(extra=alice)) == (200, b"A")
                assert await conn.ask(get(extra=bob)) == (200, b"B")
                assert await conn.ask(get()) == (200, b"A")


async def test_route_cache_never_skips_the_duplicate_host_check() -> None:
    """After requests that filled the cache, the same Host sent twice is still a 400."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with named_backend(b"A") as pa:
            async with vhost(route("a", pa, domains=["a.test"])) as (_, port):
                async with visitor(port) as conn:
                    assert await conn.ask(get()) == (200, b"A")
                    assert await conn.ask(get()) == (200, b"A")
                    status, _ = await conn.ask(get(extra=b"Host: a.test\r\n"))
                    assert status == 400
