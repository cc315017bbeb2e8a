"""Differential fuzz of the vhost's fast paths: a raw request head with the appended block,
and the per-connection route cache, against the rebuilt head and a fresh lookup.

Each example is one visitor connection: up to four requests built from a grammar that is
mostly plain (so most heads take the raw path and fill the cache) with hostile pieces mixed
in (the vhost's own headers in any case, obs-fold, bare CR or LF, NUL, tabs and spaces around
values, duplicate or odd Host values, absolute-form and `*` targets, HTTP/1.0, bodies,
Authorization), cut into reads at random points (sometimes one byte at a time), with router
changes between requests (a route replaced with other rules, removed, a longer location, a
wildcard, a routeByHTTPUser route). tests/support/vhostdiff.py feeds the reads to a fast and a
reference connection and compares what the app would get (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ_SETTINGS, count_example, fuzz_examples
from tests.support.vhostdiff import Pair, compare, make_route, server_for
from tunnel_server.vhost import HTTPRoute, HTTPVhostServer

# Plain pieces (the fast paths take them) first, then hostile ones.
METHODS: Final = [b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"POST", b"get", b"CONNECT", b"PRI"]
PLAIN_METHODS: Final = 5
TARGETS: Final = [b"/", b"/x", b"/x?q=1", b"/x/y", b"/admin", b"/api/v", b"*", b"/admin/p",
                  b"/x/../admin", b"/%61dmin", b"//admin", b"http://a.test/x",
                  b"http://b.test/admin", b"/a b", b"/\xff", b"a.test:80"]  # fmt: skip
PLAIN_TARGETS: Final = 7
VERSIONS: Final = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0"]
HOSTS: Final = [
    b"Host: a.test", b"host:a.test", b"HOST:  A.TEST.", b"Host: a.test:8080", b"Host: A.test",
    b"Host:\ta.test:80", b"Host: b.test", b"Host: c.test", b"Host: x.w.test", b"Host: d.test",
    b"Host: e.test", b"Host:\ta.test\t", b"Host: a.test\r\nhost: A.test",
    b"Host: a.test\r\nHost: a.test", b"Host: ", b"Host: a.test ", b"",
    b"Host: a.test\r\nX-Forwarded-Host: evil",
]  # fmt: skip
PLAIN_HOSTS: Final = 11
HEADERS: Final = [
    b"Accept: */*", b"User-Agent: t", b"Cookie: s=1; t=2", b"X-Custom: v: w", b"Accept:text/html",
    b"X-A:   spaced  ", b"X:\t\tv", b"Expect: 100-continue", b"X-Empty:",
    b"Authorization: Bearer t", b"X-Forwarded-For: 6.6.6.6", b"x-forwarded-for:6.6.6.6",
    b"X-Real-IP: 6.6.6.6",
    b"Forwarded: for=6.6.6.6", b"X-Forwarded-Host: evil", b"X-FORWARDED-PROTO: https",
    b"Connection: keep-alive", b"Connection: close", b"Connection: X-A", b"Keep-Alive: 5",
    b"TE: trailers", b"Trailer: X", b"Upgrade: websocket", b"Proxy-Connection: close",
    b"Proxy-Authorization: x", b"Authorization: Basic dTpw", b"Authorization: Basic Ym9iOnB3",
    b"X-Fold: a\r\n b", b"X-Nul: a\x00b", b"X-Cr: a\rb", b"X-Lf: a\nb", b"X-Sp : v",
    b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Content-Length: 0",
]  # fmt: skip
PLAIN_HEADERS: Final = 9  # what a browser or curl sends
ONE_BYTE_READS_MAX: Final = 256  # bytes of a connection sent one byte per read (CI time)
BODIES: Final = [b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\nT: v\r\n\r\n"]

ROUTE_A = {"domains": ["a.test"]}


def routes() -> dict[str, Callable[[], HTTPRoute]]:
    """The routes a server starts with and the ones router changes add."""
    return {
        "a": lambda: make_route("a", domains=["a.test"]),
        "admin": lambda: make_route(
            "admin", domains=["a.test"], locations=["/admin"], http_user="u", http_password="p"
        ),
        "b": lambda: make_route("b", domains=["b.test"], host_header_rewrite="inside.b"),
        "c": lambda: make_route("c", domains=["c.test"], request_headers_set={"X-C": "1"}),
        "wild": lambda: make_route("wild", domains=["*.w.test"]),
        "bob": lambda: make_route("bob", domains=["a.test"], route_by_http_user="bob"),
        "a-auth": lambda: make_route("a", domains=["a.test"], http_user="u", http_password="p"),
        "a-set": lambda: make_route("a", domains=["a.test"], request_headers_set={"X-S": "1"}),
        "a-rewrite": lambda: make_route("a", domains=["a.test"], host_header_rewrite="in.a"),
        "x-loc": lambda: make_route("x", domains=["a.test"], locations=["/x"]),
        "d": lambda: make_route("d", domains=["d.test", "a.test"], locations=["/api"]),
        "catch-all": lambda: make_route("star", domains=["*"]),
    }


ROUTE_CHANGES: Final = ["none"] * 16 + ["replace a", "a-auth", "a-set", "a-rewrite", "remove a",
                        "x-loc", "remove admin", "bob", "d", "catch-all", "wild"]  # fmt: skip


def change(server: HTTPVhostServer, what: str) -> None:
    """Apply one router change (some replace a route by its proxy key)."""
    router = server._router
    made = routes()
    if what == "none":
        return
    if what.startswith("remove "):
        router.remove(f"client/{what.removeprefix('remove ')}")
        return
    name = "a" if what == "replace a" else what
    router.add(made[name]())


@st.composite
def request(
    draw: st.DrawFn, palette: tuple[list[bytes], list[bytes], list[bytes]], index: int
) -> bytes:
    """Request `index` of a connection: mostly plain, its method, target and Host from the
    connection's `palette` (repeats are what the route cache keeps; the Host alternates, as
    the appended block must follow it); else with hostile pieces."""
    methods, targets, hosts = palette
    hosts = [hosts[index % len(hosts)]]
    hostile = draw(st.integers(0, 4)) == 0
    if hostile and draw(st.booleans()):
        methods, targets, hosts = METHODS, TARGETS, HOSTS
    method = draw(st.sampled_from(methods))
    lines = [b"%b %b %b" % (method, draw(st.sampled_from(targets)), b"HTTP/1.1"), b""]
    lines[1] = draw(st.sampled_from(hosts))
    pool = HEADERS if hostile else HEADERS[:PLAIN_HEADERS]
    lines += draw(st.lists(st.sampled_from(pool), max_size=3))
    body = b""
    if method == b"POST":
        lines.append(b"Content-Length: 3")
        body = b"abc"
    if hostile and draw(st.booleans()):
        lines[0] = lines[0].replace(b"HTTP/1.1", draw(st.sampled_from(VERSIONS)))
        body = draw(st.sampled_from(BODIES))
    fields = lines[1:]
    draw(st.randoms()).shuffle(fields)  # Host anywhere
    head = b"\r\n".join(line for line in [lines[0], *fields] if line) + b"\r\n\r\n"
    if hostile and draw(st.integers(0, 3)) == 0:
        head = head.replace(b"\r\n", b"\n", 1)  # a bare LF line end somewhere
    return head + body


@st.composite
def connection(draw: st.DrawFn) -> tuple[bytes, list[int], list[str]]:
    """Requests back to back, where the reads end, and a router change per request."""
    palette = (
        draw(st.lists(st.sampled_from(METHODS[:PLAIN_METHODS]), min_size=1, max_size=2)),
        draw(st.lists(st.sampled_from(TARGETS[:PLAIN_TARGETS]), min_size=1, max_size=2)),
        draw(st.lists(st.sampled_from(HOSTS[:PLAIN_HOSTS]), min_size=2, max_size=2)),
    )
    requests = [draw(request(palette, index)) for index in range(draw(st.integers(2, 5)))]
    data = b"".join(requests)
    mode = draw(st.integers(0, 7))
    if mode == 0 and len(data) <= ONE_BYTE_READS_MAX:
        cuts = list(range(1, len(data)))  # one byte at a time
    elif mode < 3:  # all in one read
        cuts = []
    elif mode < 6:  # each request in its own read
        cuts, at = [], 0
        for one in requests[:-1]:
            at += len(one)
            cuts.append(at)
    else:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    changes = ["none"] * 8  # half the connections see a steady router: the cache is used
    if draw(st.booleans()):
        changes = draw(st.lists(st.sampled_from(ROUTE_CHANGES), min_size=8, max_size=8))
    return data, cuts, changes


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS, max_examples=fuzz_examples())
@given(connection())
def test_vhost_raw_head_fuzz_fast_paths_forward_what_the_rebuild_does(
    case: tuple[bytes, list[int], list[str]],
) -> None:
    """Whatever the visitor sends, split however, with the router changing between requests,
    the fast paths give the app what the rebuild and a fresh lookup give (strict parse)."""
    count_example("vhost_raw_head")
    data, cuts, changes = case
    made = routes()
    server = server_for(*(made[name]() for name in ("a", "admin", "b", "c", "wild")))
    pair = Pair(server)
    pending = iter(changes)

    def between() -> None:
        change(server, next(pending, "none"))

    start = 0
    for cut in [*cuts, len(data)]:
        if cut > start:
            pair.feed(data[start:cut], between)
            start = cut
    compare(pair)
