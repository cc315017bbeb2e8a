"""Attacks on the HTTP vhost's edge (issue #8), played against the real tunneld and tunnelc.

Visitors are raw sockets. Between tunnelc and the app sits a `RecordingRelay`, so a test can
assert that a refused request left no byte at the app. Each attack also checks that good
requests keep flowing and that tunneld's resident memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest

from tests.e2e.test_http_e2e import (
    Tunneld,
    basic_auth,
    client_toml,
    echo_apps,
    fetch,
    header_values,
    http_proxy,
    start_tunneld,
)
from tests.support.rawhttp import (
    RecordingRelay,
    raw_exchange,
    recording_relay,
    rss_bytes,
    status_of,
)

MiB: Final = 1 << 20
HOST: Final = "edge.test"
ATTACK_BYTES: Final = 48 * MiB  # what an endless line sends at most (main buffered 112 MB)
ATTACK_TIME_S: Final = 30.0  # and for at most this long
RSS_GROWTH_LIMIT: Final = 24 * MiB  # tunneld may grow by this much during one attack
SEND_PIECE: Final = b"a" * (64 * 1024)


@contextlib.asynccontextmanager
async def edge_setup(
    run_tunneld: Any, run_tunnelc: Any
) -> AsyncIterator[tuple[Tunneld, RecordingRelay]]:
    """tunneld, one app behind a recording relay, one tunnelc proxy for HOST."""
    server = await start_tunneld(run_tunneld)
    async with echo_apps("app") as (app,), recording_relay(app.port) as relay:
        client = await run_tunnelc(
            client_toml(server, http_proxy("web", relay.port, customDomains=[HOST]))
        )
        await client.proxy_endpoint("web")
        yield server, relay


async def good_request(server: Tunneld) -> None:
    """A plain GET through the vhost answers 200 from the app, promptly."""
    started = time.monotonic()
    reply = await fetch(server.vhost_port, HOST, "/ok")
    assert reply.status == 200 and reply.json()["path"] == "/ok"
    assert time.monotonic() - started < 5.0


async def send_endless(port: int, prefix: bytes) -> tuple[int, bool]:
    """Send `prefix`, then an endless line, until the server closes or the budget is spent.
    Returns (bytes sent, whether the server ended the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    closed = False
    deadline = time.monotonic() + ATTACK_TIME_S
    try:
        writer.write(prefix)
        while sent < ATTACK_BYTES and time.monotonic() < deadline:
            writer.write(SEND_PIECE)
            sent += len(SEND_PIECE)
            try:
                async with asyncio.timeout(5.0):
                    await writer.drain()
            except TimeoutError:
                continue  # the server paused reading; keep the pressure on until the budget
            except (ConnectionError, OSError):
                closed = True
                break
        if not closed:
            try:
                async with asyncio.timeout(5.0):
                    answer = await reader.read(65536)
                closed = answer == b"" or answer.startswith(b"HTTP/1.1 4")
            except (ConnectionError, OSError):
                closed = True
            except TimeoutError:
                closed = False
    finally:
        writer.close()
    return sent, closed


CHUNKED_HEAD: Final = (
    f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
)


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(CHUNKED_HEAD + b"0\r\nX-Trailer: ", id="endless-trailer"),
        pytest.param(CHUNKED_HEAD + b"5\r\nhello\r\n1;ext=", id="endless-chunk-extension"),
        pytest.param(CHUNKED_HEAD + b"0" * 16, id="endless-chunk-size"),
        pytest.param(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Head: ".encode(), id="endless-header"),
    ],
)
async def test_edge_endless_line_is_bounded(
    run_tunneld: Any, run_tunnelc: Any, prefix: bytes
) -> None:
    """An endless trailer, chunk line or header is cut off: tunneld's memory stays bounded
    and other visitors are served meanwhile."""
    async with edge_setup(run_tunneld, run_tunnelc) as (server, _relay):
        await good_request(server)
        pid = server.process.pid
        before = rss_bytes(pid)
        attack = asyncio.create_task(send_endless(server.vhost_port, prefix))
        peak = before
        while not attack.done():
            peak = max(peak, rss_bytes(pid))
            await good_request(server)  # also paces the RSS samples
        sent, closed = await attack
        peak = max(peak, rss_bytes(pid))
        assert closed, f"the server kept reading an endless line ({sent} bytes)"
        assert peak - before < RSS_GROWTH_LIMIT, f"tunneld grew {(peak - before) / MiB:.1f} MiB"
        await good_request(server)


SMUGGLING: Final = {
    "cl-te": b"POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "double-cl": b"POST / HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 3\r\n"
    b"Content-Length: 30\r\n\r\nabc",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n10000000000000003\r\nabc\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: edge.test\r\nX-A: b\r\n"
    b" Transfer-Encoding: chunked\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: edge.test\n\n",
    "bare-lf-in-chunk": b"POST / HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n3\nabc\r\n0\r\n\r\n",
    "te-not-chunked-last": b"POST / HTTP/1.1\r\nHost: edge.test\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "host-userinfo": b"GET / HTTP/1.1\r\nHost: edge.test:80@evil.test\r\n\r\n",
    "host-space": b"GET / HTTP/1.1\r\nHost: edge.test evil.test\r\n\r\n",
    "absolute-userinfo": b"GET http://edge.test@evil.test/ HTTP/1.1\r\nHost: edge.test\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: edge.test\r\nHost: evil.test\r\n\r\n",
    "percent-nul": b"GET /a%00b HTTP/1.1\r\nHost: edge.test\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_edge_malformed_request_never_reaches_the_app(
    run_tunneld: Any, run_tunnelc: Any, raw: bytes
) -> None:
    """Smuggling-shaped and malformed requests get a 4xx/501 and close; not one byte of them
    reaches the app, and the next visitor is served."""
    async with edge_setup(run_tunneld, run_tunnelc) as (server, relay):
        reply = await raw_exchange(server.vhost_port, raw)
        assert status_of(reply) in (400, 501), reply[:200]
        assert relay.to_app == b"", bytes(relay.to_app[:300])
        await good_request(server)


async def test_edge_framing_and_forwarded_are_the_servers_own(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """The app sees `Transfer-Encoding: chunked` as the vhost framed it and a `Forwarded`
    that names the real peer, whatever the visitor wrote."""
    async with edge_setup(run_tunneld, run_tunnelc) as (server, relay):
        raw = (
            f"POST /te HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: Chunked\r\n"
            "Forwarded: for=203.0.113.9;host=bank.test;proto=https\r\nConnection: close\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n"
        ).encode()
        reply = await raw_exchange(server.vhost_port, raw)
        assert status_of(reply) == 200, reply[:300]
        head = bytes(relay.to_app).split(b"\r\n\r\n", 1)[0].decode()
        lines = head.split("\r\n")
        assert "Transfer-Encoding: chunked" in lines
        forwarded = [line for line in lines if line.lower().startswith("forwarded:")]
        assert forwarded == [f'Forwarded: for="127.0.0.1";host="{HOST}";proto=http'], head
        assert "203.0.113.9" not in head


BYPASSES: Final = ["/./admin", "//admin", "/%61dmin", "/x/../admin", "/%2e/admin", "/%2E%2E/admin",
                   "/admin/./", "/public/..//admin/x"]  # fmt: skip


async def test_edge_path_normalization_blocks_auth_bypass(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """`/admin` with httpUser cannot be reached without credentials through a path that means
    the same thing; with credentials the admin app gets the normalized path."""
    server = await start_tunneld(run_tunneld)
    async with echo_apps("public", "admin") as (public, admin):
        client = await run_tunnelc(
            client_toml(
                server,
                http_proxy("public", public.port, customDomains=[HOST]),
                http_proxy("admin", admin.port, customDomains=[HOST], locations=["/admin"],
                           httpUser="ops", httpPassword="s3cret"),
            )
        )  # fmt: skip
        await client.proxy_endpoint("public")
        await client.proxy_endpoint("admin")
        for path in BYPASSES:
            raw = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
            reply = await raw_exchange(server.vhost_port, raw)
            assert status_of(reply) == 401, (path, reply[:200])
        assert not admin.received and not public.received
        auth = basic_auth("ops", "s3cret")["Authorization"]
        raw = (
            f"GET /x/../%61dmin//panel?q=%2e HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {auth}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        assert status_of(await raw_exchange(server.vhost_port, raw)) == 200
        # the query is forwarded as sent (aiohttp decodes it for us here)
        assert [(r.path, r.query) for r in admin.received] == [("/admin/panel", "q=.")]
        seen = await fetch(server.vhost_port, HOST, "/%2Fadmin")  # an encoded slash is data
        assert seen.status == 200 and seen.json()["app"] == "public"
        assert header_values(seen.json(), "Authorization") == []
