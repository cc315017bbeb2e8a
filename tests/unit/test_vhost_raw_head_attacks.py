"""Attacks on the vhost's fast paths (raw request heads, the per-connection route cache):
each sequence of reads goes through the real RequestReader and `prepare` on a connection that
keeps its caches and on one that rebuilds every head and looks every route up afresh, and the
app must get the same request from both (tests/support/vhostdiff.py parses them with h11).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.vhostdiff import MAX_HEADER_BYTES, Pair, compare, make_route, server_for
from tunnel_server.vhost import HTTPVhostServer
from tunnel_server.vhost.exchange import Outcome


def _run(server: HTTPVhostServer, *reads: bytes, between: Callable[[], None] | None = None) -> Pair:
    pair = Pair(server)
    for data in reads:
        pair.feed(data, between)
    compare(pair)
    return pair


def _a_server() -> HTTPVhostServer:
    return server_for(make_route("a", domains=["a.test"]))


def test_route_cache_asterisk_target_checked_for_each_method() -> None:
    """`OPTIONS *` fills no cache entry that lets `GET *` past check_request: it is a 400."""
    options = b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n"
    get = b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n"
    pair = _run(_a_server(), options, get)
    assert [step.outcome for step in pair.fast_steps] == [None, Outcome.CLOSE]
    assert pair.fast_steps[1].answer.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("split", [False, True])
def test_raw_head_pipelined_plain_after_unusual_and_back(split: bool) -> None:
    """Pipelined heads in one read (or one per read): plain, then one with the vhost's own
    headers, then plain again; each gets the vhost's block, never the visitor's."""
    plain = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"
    spoof = (
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    reads = [plain, spoof, plain, spoof] if split else [plain + spoof + plain + spoof]
    pair = _run(_a_server(), *reads)
    raws = [step.head.raw is not None for step in pair.fast_steps]
    assert raws == [True, False, True, False] if split else [True, False, False, False]
    for step in pair.fast_steps:
        assert b"X-Real-IP: 6.6.6.6" not in step.first_write


def test_raw_head_block_rebuilt_when_host_spelling_changes() -> None:
    """Raw heads on one connection with Host spellings that route alike: each request's
    appended block names its own Host (the rebuild's), not the one cached before."""
    hosts = [b"a.test", b"A.TEST.", b"a.test:8080", b"a.test"]
    reads = [b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host for host in hosts]
    pair = _run(_a_server(), *reads)
    assert [step.head.raw is not None for step in pair.fast_steps] == [True] * len(hosts)


def test_route_cache_dropped_by_router_changes() -> None:
    """A cached route is not used once the router changed: a route replaced with basic auth
    (401), removed (404), re-added, and shadowed by a longer location."""
    server = _a_server()
    router = server._router
    changes = iter(
        [
            lambda: None,
            lambda: None,
            lambda: router.add(
                make_route("a", domains=["a.test"], http_user="u", http_password="p")
            ),
            lambda: router.remove("client/a"),
            lambda: router.add(make_route("a", domains=["a.test"])),
            lambda: router.add(make_route("x", domains=["a.test"], locations=["/x"])),
        ]
    )
    request = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"
    pair = _run(server, *[request] * 6, between=lambda: next(changes)())
    routes = [
        step.route.proxy_name if step.route else step.answer[9:12] for step in pair.fast_steps
    ]
    assert routes == ["a", "a", b"401", b"404", "a", "x"]


@pytest.mark.parametrize("over", [0, 1])
def test_raw_head_at_the_size_limit(over: int) -> None:
    """A plain head exactly at max_header_bytes (as counted) is kept raw and forwarded; one
    byte more is a 431 on both paths."""
    base = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Pad: %b\r\n\r\n"
    counted = 1 + (4 + 6 + 4) + (5 + 4)  # target, Host line, X-Pad line without its value
    data = base % (b"p" * (MAX_HEADER_BYTES - counted + over))
    pair = _run(_a_server(), data)
    if over:
        assert [f.status for f in pair.failures] == [431] and not pair.fast_steps
    else:
        (step,) = pair.fast_steps
        assert step.head.raw == data and step.first_write.startswith(data[:-2])


@pytest.mark.parametrize("one_read", [True, False])
def test_raw_head_after_chunked_body_and_expect(one_read: bool) -> None:
    """A chunked POST with trailers, then plain heads (HEAD, an Expect: 100-continue POST)
    pipelined after it, in one read or one per request: each reaches the app as rebuilt."""
    chunked = (
        b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-T: v\r\n\r\n"
    )
    head = b"HEAD /h HTTP/1.1\r\nHost: a.test\r\n\r\n"
    expect = (
        b"POST /e HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    )
    reads = [chunked + head + expect + head] if one_read else [chunked, head, expect, head]
    pair = _run(_a_server(), *reads)
    assert [step.head.method for step in pair.fast_steps] == [b"POST", b"HEAD", b"POST", b"HEAD"]
    assert all(step.outcome is None for step in pair.fast_steps)
    assert pair.fast_steps[2].first_write.endswith(b"\r\n\r\nhi")
