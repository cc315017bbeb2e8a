"""Attacks on the vhost's fast paths over real sockets: a keep-alive visitor connection whose
requests fill the route cache and the appended-header block, then a router change or another
Host, peer or route rules; the app must see what a fresh lookup and rebuild would give it.

Real sockets on 127.0.0.1 (and 127.0.0.2 for a second visitor address): the in-process vhost
and raw backends that record each request head (tests/integration/test_vhost_raw_head.py).
"""

from __future__ import annotations

import asyncio
import base64

from tunnel_server.vhost import HTTPVhostServer

from .test_vhost_http import LOOPBACK, route, vhost
from .test_vhost_raw_head import TEST_TIMEOUT_S, named_backend, recording_backend, visitor

OTHER_LOOPBACK = "127.0.0.2"


def get(path: bytes = b"/", host: bytes = b"a.test", extra: bytes = b"") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: %b\r\n%b\r\n" % (path, host, extra)


def header(head: bytes, name: bytes) -> list[bytes]:
    """The values of one header (case-insensitive) in a recorded head."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            out.append(value.strip())
    return out


async def test_fastpath_route_rules_reloaded_on_one_connection() -> None:
    """Plain requests fill both caches; then the route is reloaded with basic auth, a host
    rewrite, a set header: each next request on the same connection gets the new rules."""
    async with asyncio.timeout(TEST_TIMEOUT_S), recording_backend() as (backend, heads):
        async with vhost(route("a", backend, domains=["a.test"])) as (server, port):
            router = server._router
            async with visitor(port) as conn:
                for _ in range(2):
                    assert (await conn.ask(get()))[0] == 200
                locked = {"http_user": "u", "http_password": "p"}
                router.add(route("a", backend, domains=["a.test"], **locked))
                assert (await conn.ask(get()))[0] == 401
                auth = b"Authorization: Basic " + base64.b64encode(b"u:p") + b"\r\n"
                assert (await conn.ask(get(extra=auth)))[0] == 200
                assert header(heads[-1], b"authorization") == []
                router.add(route("a", backend, domains=["a.test"], host_header_rewrite="in.a"))
                assert (await conn.ask(get()))[0] == 200
                assert header(heads[-1], b"host") == [b"in.a"]
                assert header(heads[-1], b"x-forwarded-host") == [b"a.test"]
                router.add(
                    route("a", backend, domains=["a.test"], request_headers_set={"X-Real-IP": "s"})
                )
                assert (await conn.ask(get()))[0] == 200
                assert header(heads[-1], b"x-real-ip") == [b"s"]
                router.add(route("a", backend, domains=["a.test"]))
                assert (await conn.ask(get()))[0] == 200
                assert header(heads[-1], b"x-real-ip") == [LOOPBACK.encode()]
                assert header(heads[-1], b"host") == [b"a.test"]
            assert server.raw_heads == 3


async def test_fastpath_appended_block_follows_the_host() -> None:
    """One connection switching Host spellings: the Forwarded and X-Forwarded-Host values the
    app gets are each request's own Host, never the previous request's."""
    async with asyncio.timeout(TEST_TIMEOUT_S), recording_backend() as (backend, heads):
        async with vhost(route("a", backend, domains=["a.test"])) as (server, port):
            hosts = [b"a.test", b"A.TEST.", b"a.test:8080", b"a.test", b"a.test:8080"]
            async with visitor(port) as conn:
                for host in hosts:
                    assert (await conn.ask(get(host=host)))[0] == 200
            assert server.raw_heads == len(hosts)
            for head, host in zip(heads, hosts, strict=True):
                assert header(head, b"x-forwarded-host") == [host]
                assert header(head, b"host") == [host]
                forwarded = b'for="%b";host="%b";proto=http' % (LOOPBACK.encode(), host)
                assert header(head, b"forwarded") == [forwarded]


async def test_fastpath_each_visitor_address_gets_its_own_block() -> None:
    """Two visitors from different addresses, interleaved on one route (one pooled upstream
    may carry both): each request's X-Forwarded-For and X-Real-IP name its own visitor."""
    async with asyncio.timeout(TEST_TIMEOUT_S), recording_backend() as (backend, heads):
        async with vhost(route("a", backend, domains=["a.test"])) as (server, port):
            expected = []
            for round_ in range(2):
                for address in (LOOPBACK, OTHER_LOOPBACK):
                    reader, writer = await asyncio.open_connection(
                        LOOPBACK, port, local_addr=(address, 0)
                    )
                    try:
                        for _ in range(2):
                            writer.write(get(b"/r%d" % round_))
                            head = await reader.readuntil(b"\r\n\r\n")
                            assert head.startswith(b"HTTP/1.1 200 ")
                            await reader.readexactly(2)
                            expected.append(address.encode())
                    finally:
                        writer.close()
                        await writer.wait_closed()
            assert server.raw_heads == len(expected)
            for head, address in zip(heads, expected, strict=True):
                assert header(head, b"x-forwarded-for") == [address]
                assert header(head, b"x-real-ip") == [address]


async def test_fastpath_exact_route_removed_falls_to_wildcard_and_catch_all() -> None:
    """A cached exact-name route removed: the same request goes to the wildcard, then to the
    catch-all once the wildcard goes, then 404; a longer location added wins at once."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with (
            named_backend(b"E") as pe,
            named_backend(b"W") as pw,
            named_backend(b"S") as ps,
            named_backend(b"L") as pl,
        ):
            routes = (
                route("exact", pe, domains=["x.w.test"]),
                route("wild", pw, domains=["*.w.test"]),
                route("star", ps, domains=["*"]),
            )
            async with vhost(*routes) as (server, port), visitor(port) as conn:
                router = server._router
                request = get(b"/p/q", b"x.w.test")
                assert await conn.ask(request) == (200, b"E")
                assert await conn.ask(request) == (200, b"E")
                router.add(route("long", pl, domains=["x.w.test"], locations=["/p"]))
                assert await conn.ask(request) == (200, b"L")
                router.remove("client/long")
                router.remove("client/exact")
                assert await conn.ask(request) == (200, b"W")
                router.remove("client/wild")
                assert await conn.ask(request) == (200, b"S")
                router.remove("client/star")
                assert (await conn.ask(request))[0] == 404
                router.add(route("exact", pe, domains=["x.w.test"]))
                assert await conn.ask(request) == (200, b"E")


async def test_fastpath_pipelined_spoofing_heads_in_one_write() -> None:
    """Plain and spoofing heads pipelined in one write (the lane serves them): the app never
    gets a visitor's X-Forwarded-For, X-Real-IP or Forwarded as the vhost's, and plain ones
    after a spoofing one get the vhost's block."""
    plain = get(b"/p")
    spoof = get(b"/s", extra=b"X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n")
    chain = get(b"/c", extra=b"X-Forwarded-For: 6.6.6.7\r\n")
    sequence = [plain, spoof, plain, chain, plain, plain]
    async with asyncio.timeout(TEST_TIMEOUT_S), recording_backend() as (backend, heads):
        async with vhost(route("a", backend, domains=["a.test"])) as (server, port):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            try:
                writer.write(b"".join(sequence))
                for _ in sequence:
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 ")
                    await reader.readexactly(2)
            finally:
                writer.close()
                await writer.wait_closed()
        assert isinstance(server, HTTPVhostServer)
    ip = LOOPBACK.encode()
    for head, sent in zip(heads, sequence, strict=True):
        assert header(head, b"x-real-ip") == [ip]
        assert header(head, b"forwarded") == [b'for="%b";host="a.test";proto=http' % ip]
        want = b"6.6.6.7, " + ip if sent is chain else ip
        assert header(head, b"x-forwarded-for") == [want]


async def test_fastpath_heads_split_anywhere_reach_the_app_whole() -> None:
    """Pipelined heads written one byte at a time, then cut at each head's end and inside
    the next: however the reads fall, each head reaches the app once, with its own target,
    the visitor's headers and exactly the vhost's block."""
    heads_sent = [get(b"/%d" % i, extra=b"Accept: */*\r\n") for i in range(3)]
    data = b"".join(heads_sent)
    ends = [len(b"".join(heads_sent[: i + 1])) for i in range(len(heads_sent))]
    cuts_by_way = [list(range(1, len(data))), [ends[0], ends[0] + 5, ends[1] - 1, ends[1]]]
    async with asyncio.timeout(TEST_TIMEOUT_S), recording_backend() as (backend, heads):
        async with vhost(route("a", backend, domains=["a.test"])) as (_, port):
            for cuts in cuts_by_way:
                heads.clear()
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                try:
                    start = 0
                    for cut in [*cuts, len(data)]:
                        writer.write(data[start:cut])
                        await writer.drain()
                        start = cut
                    for _ in heads_sent:
                        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                        await reader.readexactly(2)
                finally:
                    writer.close()
                    await writer.wait_closed()
                ip = LOOPBACK.encode()
                for i, head in enumerate(heads):
                    assert head.startswith(b"GET /%d HTTP/1.1\r\n" % i)
                    assert header(head, b"accept") == [b"*/*"]
                    assert header(head, b"host") == [b"a.test"]
                    assert header(head, b"x-forwarded-for") == [ip]
                    assert header(head, b"x-real-ip") == [ip]
                assert len(heads) == len(heads_sent)
