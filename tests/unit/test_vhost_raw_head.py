"""Raw request heads: which heads the reader keeps as they came, and that forwarding one says
what the rebuilt head says.

A head is kept raw (`RequestHead.raw`) only in the common case; every unusual request must
fall back to the rebuild (`rewrite.request_head`), which drops and regenerates what the vhost
owns. Each fallback case below is one a smuggling or spoofing attempt would use.
"""

from __future__ import annotations

import httptools
import pytest

from tunnel_server.vhost.inbound import InboundProtocol
from tunnel_server.vhost.request import ParseFailure, RequestHead, RequestReader
from tunnel_server.vhost.rewrite import (
    appended_headers,
    compile_rules,
    raw_head_ok,
    request_head,
)

MAX_HEAD_BYTES = 64 * 1024
PEER = b"192.0.2.7"


def _items(*reads: bytes) -> list[object]:
    """Feed `reads` to a RequestReader as separate reads; return what it queued."""
    conn = InboundProtocol(lambda _c: None)
    reader = RequestReader(conn, MAX_HEAD_BYTES)
    conn.feeder = reader.feed
    for data in reads:
        conn.feeder(data)
    out = []
    while (item := conn.pop()) is not None:
        out.append(item)
    return out


def _heads(*reads: bytes) -> list[RequestHead]:
    return [item for item in _items(*reads) if isinstance(item, RequestHead)]


def _parse(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(method, target, headers) as llhttp reads a forwarded head."""
    headers: list[tuple[bytes, bytes]] = []
    url: list[bytes] = []

    class _Cb:
        def on_url(self, data: bytes) -> None:
            url.append(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            headers.append((name.lower(), value))

    parser = httptools.HttpRequestParser(_Cb())
    parser.feed_data(head)
    return parser.get_method(), b"".join(url), headers


_NO_RULES = compile_rules(
    host_header_rewrite=None,
    request_headers_set={},
    response_headers_set={},
    http_user=None,
    http_password=None,
)

PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
    b"GET /x?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"DELETE /item/7 HTTP/1.1\r\nhost: a.test\r\nCookie: s=1; t=2\r\nX-Custom: v: w\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:a.test\r\nAccept:  text/html \r\n\r\n",  # OWS llhttp accepts
    b"GET / HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer t\r\n\r\n",  # no route auth
]


@pytest.mark.parametrize("data", PLAIN)
def test_raw_head_forwarded_says_what_the_rebuild_says(data: bytes) -> None:
    """A plain head is kept raw, and raw + appended headers parse to the rebuild's headers."""
    (head,) = _heads(data)
    assert head.raw == data
    assert raw_head_ok(_NO_RULES)
    host = head.host
    assert host is not None
    forwarded = head.raw[:-2] + appended_headers(_NO_RULES, host, PEER, b"http")
    rebuilt = request_head(
        method=head.method,
        target=head.target,
        headers=head.headers,
        connection_tokens=head.connection_tokens,
        rules=_NO_RULES,
        host=host,
        framing=head.framing,
        upgrade=head.upgrade,
        peer_ip=PEER,
    )
    method, target, got = _parse(forwarded)
    want_method, want_target, want = _parse(rebuilt)
    assert (method, target) == (want_method, want_target)
    assert sorted(got) == sorted(want)
    assert dict(got)[b"x-forwarded-for"] == PEER


def test_raw_head_pipelined_requests_each_kept_raw() -> None:
    """Pipelined plain requests in one read are each kept raw, with their own bytes."""
    one = b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
    two = b"GET /2 HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n"
    heads = _heads(one + two + one)
    assert [h.raw for h in heads] == [one, two, one]


def test_raw_head_content_length_body_kept_raw_and_next_is_not() -> None:
    """A Content-Length request's head is raw; a request pipelined after its body falls back
    (where it begins is not tracked past a body)."""
    post = b"POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\n"
    after = b"GET /n HTTP/1.1\r\nHost: a.test\r\n\r\n"
    heads = _heads(post + b"abc" + after)
    assert [h.raw for h in heads] == [post, None]


FALLBACK = {
    "connection-keep-alive": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    "connection-token": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n",
    "keep-alive": b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\n\r\n",
    "x-forwarded-for": b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    "forwarded": b'GET / HTTP/1.1\r\nHost: a\r\nForwarded: for="6.6.6.6"\r\n\r\n',
    "x-real-ip": b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    "x-forwarded-host": b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: evil\r\n\r\n",
    "x-forwarded-proto": b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-proto: https\r\n\r\n",
    "proxy-authorization": b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: x\r\n\r\n",
    "proxy-connection": b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    "te": b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    "trailer": b"GET / HTTP/1.1\r\nHost: a\r\nTrailer: X\r\n\r\n",
    "transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "upgrade-alone": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    "http-1.0": b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "two-spaces-in-request-line": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab-before-value": b"GET / HTTP/1.1\r\nHost: a\r\nX:\t\t\tv\r\n\r\n",  # 2 bytes too many
}


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_raw_head_unusual_request_falls_back_to_rebuild(name: str) -> None:
    """Each unusual request is parsed as before but not kept raw (or refused outright)."""
    items = _items(FALLBACK[name])
    heads = [item for item in items if isinstance(item, RequestHead)]
    assert heads or any(isinstance(item, ParseFailure) for item in items)
    assert all(head.raw is None for head in heads)


REFUSED_OR_REBUILT = {
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\nX: 1\n\n",
    "bare-lf-in-header": b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
    "duplicate-content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(REFUSED_OR_REBUILT))
def test_raw_head_malformed_request_never_kept_raw(name: str) -> None:
    """A head llhttp refuses gets a ParseFailure; one it tolerates is rebuilt, never raw."""
    items = _items(REFUSED_OR_REBUILT[name])
    assert items
    assert all(item.raw is None for item in items if isinstance(item, RequestHead))


def test_raw_head_split_across_reads_falls_back() -> None:
    """A head that began in an earlier read is rebuilt; the next whole one is raw again."""
    first = b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
    heads = _heads(first[:10], first[10:], first)
    assert [h.raw for h in heads] == [None, first]


def test_raw_head_split_read_that_looks_like_a_whole_head_falls_back() -> None:
    """A second read that continues a head but itself looks like a whole head (a request
    line inside a header value, whitespace making up the length) is not taken for the head."""
    first = b"GET /a HTTP/1.1\r\nX: "
    second = b"GET /a HTTP/1.1\r\nHost: a.test\r\nY:" + b" " * 21 + b"1\r\n\r\n"
    (head,) = _heads(first, second)
    assert head.raw is None
    assert head.headers[0] == (b"X", b"GET /a HTTP/1.1")


def test_raw_head_duplicate_host_is_kept_but_counted() -> None:
    """Two Host headers: the count that makes check_request refuse it is still there."""
    (head,) = _heads(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert head.host_count == 2


@pytest.mark.parametrize(
    "options",
    [
        {"host_header_rewrite": "internal:80"},
        {"request_headers_set": {"X-A": "1"}},
        {"http_user": "u", "http_password": "p"},
    ],
)
def test_raw_head_route_that_rewrites_is_not_raw_ok(options: dict[str, object]) -> None:
    """A route with hostHeaderRewrite, requestHeaders.set or basic auth needs the rebuild."""
    kwargs: dict[str, object] = {
        "host_header_rewrite": None,
        "request_headers_set": {},
        "response_headers_set": {},
        "http_user": None,
        "http_password": None,
    }
    kwargs.update(options)
    assert not raw_head_ok(compile_rules(**kwargs))  # type: ignore[arg-type]


def test_router_find_says_which_answers_the_cache_may_keep() -> None:
    """`find` marks exact-name answers (cacheable) apart from wildcard ones (they depend on
    the shared claims), and every add or remove bumps `version`."""
    from tunnel_server.vhost import HTTPRoute, VhostRouter, tcp_opener

    def make(name: str, domains: list[str]) -> HTTPRoute:
        return HTTPRoute(
            proxy_key=f"c/{name}",
            proxy_name=name,
            opener=tcp_opener("127.0.0.1", 1),
            domains=domains,
        )

    router = VhostRouter(None, 100)
    before = router.version
    exact, wild = make("e", ["a.test"]), make("w", ["*.w.test"])
    router.add(exact)
    router.add(wild)
    assert router.version == before + 2
    assert router.find("A.test:80", "/", "") == (exact, True)
    assert router.find("x.w.test", "/", "") == (wild, False)
    assert router.find("nowhere.test", "/", "") == (None, False)
    router.remove("c/w")
    assert router.version == before + 3
    router.remove("c/unknown")  # nothing removed: nothing changed
    assert router.version == before + 3
