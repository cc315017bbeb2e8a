"""Fuzz tunnelc's inspector capture (tunnel_client/inspect/capture.py, sides.py): valid
HTTP/1.1 conversations (pipelining, chunked bodies with extensions and trailers, 1xx
responses, HEAD, 204/304 with a Content-Length, an upgrade at the end) fed in random splits
show exactly the messages that were generated; random garbage never raises out of a feed and
never makes a side hold more than one head's cap."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ_SETTINGS
from tunnel_client.inspect.capture import MAX_HEAD_BYTES, HTTPCapture
from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.store import CaptureStore

MAX_EXCHANGES: Final = 6  # per conversation (well under MAX_PENDING_EXCHANGES)
BODY_LIMIT: Final = 40  # the store's max_body_bytes: some bodies are kept whole, some cut
HEAD_SLACK: Final = 4  # a kept head may end with its CRLF CRLF past the cap

Headers = tuple[tuple[str, str], ...]

TOKENS: Final = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
VALUES: Final = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/,.", max_size=12).map(str.strip)
EXTRA_HEADERS: Final = st.lists(st.tuples(TOKENS.map(lambda t: "X-" + t), VALUES), max_size=3)
BODIES: Final = st.binary(max_size=80)


@dataclass
class Exchange:
    """One generated request and response, their bytes and what the capture must show."""

    request: bytes
    response: bytes
    method: str
    target: str
    request_headers: Headers
    request_body: bytes
    status: int
    reason: str
    response_headers: Headers
    response_body: bytes


def chunked(draw: st.DrawFn, body: bytes) -> tuple[bytes, Headers]:
    """`body` in random chunks, maybe with extensions; the trailers appended (as headers)."""
    out = bytearray()
    rest = body
    while rest:
        n = draw(st.integers(1, len(rest)))
        ext = draw(st.sampled_from(["", ";a=b", ';name="q v"', ";x"]))
        out += b"%x%s\r\n%s\r\n" % (n, ext.encode(), rest[:n])
        rest = rest[n:]
    trailers = tuple(draw(EXTRA_HEADERS))
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    return bytes(out), trailers


def head(start: str, headers: Headers) -> bytes:
    return (start + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n").encode()


@st.composite
def exchanges(draw: st.DrawFn, upgrade: bool) -> Exchange:
    method = "GET" if upgrade else draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"]))
    target = "/" + draw(TOKENS) + draw(st.sampled_from(["", "?q=1", "?a=%20b&c"]))
    headers: Headers = (("Host", "a.test"), *draw(EXTRA_HEADERS))
    body = b""
    wire_body = b""
    if upgrade:
        headers += (("Connection", "upgrade"), ("Upgrade", "websocket"))
    elif method in ("POST", "PUT"):
        body = draw(BODIES)
        if draw(st.booleans()):
            wire_body, _trailers = chunked(draw, body)
            headers += (("Transfer-Encoding", "chunked"),)
        else:
            wire_body = body
            headers += (("Content-Length", str(len(body))),)
    request = head(f"{method} {target} HTTP/1.1", headers) + wire_body

    interim = b""
    for _ in range(draw(st.integers(0, 2))):
        interim += head(
            draw(st.sampled_from(["HTTP/1.1 100 Continue", "HTTP/1.1 103 Early Hints"])),
            tuple(draw(EXTRA_HEADERS)),
        )
    if upgrade:
        status, reason = 101, "Switching Protocols"
    else:
        status, reason = draw(
            st.sampled_from([(200, "OK"), (201, "Created"), (204, "No Content"),
                             (304, "Not Modified"), (404, "Not Found"), (500, "Oops")])
        )  # fmt: skip
    rheaders: Headers = tuple(draw(EXTRA_HEADERS))
    rbody = b""
    wire_rbody = b""
    if upgrade:
        rheaders += (("Connection", "upgrade"), ("Upgrade", "websocket"))
        wire_rbody = draw(st.binary(max_size=40))  # not HTTP any more
    elif method == "HEAD" or status in (204, 304):
        if draw(st.booleans()):  # the length of the body it would have had, none sent
            rheaders += (("Content-Length", str(draw(st.integers(1, 5000)))),)
    else:
        rbody = draw(BODIES)
        if draw(st.booleans()):
            wire_rbody, _trailers = chunked(draw, rbody)
            rheaders += (("Transfer-Encoding", "chunked"),)
        else:
            wire_rbody = rbody
            rheaders += (("Content-Length", str(len(rbody))),)
    response = interim + head(f"HTTP/1.1 {status} {reason}", rheaders) + wire_rbody
    return Exchange(
        request, response, method, target, headers, body, status, reason, rheaders, rbody
    )


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Exchange], list[tuple[bool, bytes]]]:
    """Exchanges and the order their bytes reach the capture: each response after its own
    request; requests pipelined ahead as far as the draw says; every stream split randomly."""
    count = draw(st.integers(1, MAX_EXCHANGES))
    upgrade_last = draw(st.booleans())
    items = [draw(exchanges(upgrade_last and i == count - 1)) for i in range(count)]
    requests = b"".join(e.request for e in items)
    responses = b"".join(e.response for e in items)
    # Cut each direction into pieces; responses may only overtake nothing: a response piece
    # is fed only once every request whose response it starts was fed whole.
    req_cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(requests) - 1)), max_size=12))))
    resp_cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(responses) - 1)), max_size=12))))
    req_pieces = split(requests, req_cuts)
    resp_pieces = split(responses, resp_cuts)
    req_ends = ends([e.request for e in items])
    resp_starts = [
        end - len(e.response)
        for end, e in zip(ends([e.response for e in items]), items, strict=True)
    ]
    order: list[tuple[bool, bytes]] = []
    fed_req = fed_resp = 0
    ri = si = 0
    while ri < len(req_pieces) or si < len(resp_pieces):
        # the response bytes up to the next piece's end belong to exchanges whose request
        # must be whole already
        can_resp = si < len(resp_pieces) and all(
            req_ends[k] <= fed_req
            for k in range(len(items))
            if resp_starts[k] < fed_resp + len(resp_pieces[si])
        )
        if can_resp and (ri == len(req_pieces) or draw(st.booleans())):
            order.append((False, resp_pieces[si]))
            fed_resp += len(resp_pieces[si])
            si += 1
        else:
            order.append((True, req_pieces[ri]))
            fed_req += len(req_pieces[ri])
            ri += 1
    return items, order


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *[c for c in cuts if 0 < c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def ends(parts: list[bytes]) -> list[int]:
    total, out = 0, []
    for part in parts:
        total += len(part)
        out.append(total)
    return out


def make_capture(store: CaptureStore) -> HTTPCapture:
    return HTTPCapture(store, "web", clock=lambda: 1.0, wall_clock=lambda: 1_700_000_000.0)


def shown(exchange: CapturedExchange) -> tuple[object, ...]:
    return (
        exchange.method,
        exchange.path,
        exchange.request_headers,
        exchange.request_body.data,
        exchange.request_body.size,
        exchange.status,
        exchange.reason,
        exchange.response_headers,
        exchange.response_body.data,
        exchange.response_body.size,
    )


def expected(item: Exchange) -> tuple[object, ...]:
    return (
        item.method,
        item.target,
        item.request_headers,
        item.request_body[:BODY_LIMIT],
        len(item.request_body),
        item.status,
        item.reason,
        item.response_headers,
        item.response_body[:BODY_LIMIT],
        len(item.response_body),
    )


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(conversations())
def test_capture_fuzz_shows_exactly_the_generated_exchanges(
    conversation: tuple[list[Exchange], list[tuple[bool, bytes]]],
) -> None:
    """However the bytes are split and interleaved, the capture shows each generated request
    and response exactly, with no error, and no kept head exceeds the cap."""
    items, order = conversation
    store = CaptureStore(max_requests=50, max_body_bytes=BODY_LIMIT)
    capture = make_capture(store)
    for is_request, piece in order:
        if is_request:
            capture.feed_request(piece)
        else:
            capture.feed_response(piece)
    upgraded = items[-1].status == 101
    if not upgraded:
        assert capture.capturing, capture.stop_reason
        assert capture.idle
    capture.close()
    got = list(reversed(store.list()))
    assert [shown(e) for e in got] == [expected(i) for i in items]
    assert all(e.error is None for e in got[: len(got) - upgraded])
    assert all(e.request_head_error is None and e.response_head_error is None for e in got)


GARBAGE_PIECES: Final = [
    b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"\r\n", b"\r\n\r\n", b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n", b"5;x=y\r\nabcde\r\n", b"0\r\nT: v\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"HEAD / HTTP/1.1\r\n",
    b"X: " + b"a" * 3000, b"\x16\x03\x01", b"\x00\xff", b"Content-Length: -1\r\n",
    b"Connection: upgrade\r\nUpgrade: x\r\n", b"HTTP/1.1 101 S\r\n",
]  # fmt: skip


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.sampled_from(GARBAGE_PIECES), st.binary(max_size=64)),
            st.integers(1, 40),
        ),
        max_size=60,
    )
)
def test_capture_fuzz_garbage_never_raises_and_stays_bounded(
    feeds: list[tuple[bool, bytes, int]],
) -> None:
    """Random pieces of HTTP and random bytes, repeated, in both directions: no feed raises,
    each side holds at most one head's cap, and every kept head fits the cap."""
    store = CaptureStore(max_requests=50, max_body_bytes=BODY_LIMIT)
    capture = make_capture(store)
    for is_request, piece, times in feeds:
        data = piece * times
        if is_request:
            capture.feed_request(data)
        else:
            capture.feed_response(data)
        for side in (capture._req, capture._resp):
            assert side._size <= MAX_HEAD_BYTES + HEAD_SLACK
    capture.close()
    for exchange in store.list():
        assert len(exchange.request_head) <= MAX_HEAD_BYTES + HEAD_SLACK
        assert len(exchange.response_head) <= MAX_HEAD_BYTES + HEAD_SLACK
        assert len(exchange.request_body.data) <= BODY_LIMIT
        assert len(exchange.response_body.data) <= BODY_LIMIT
        # the lazy parse of whatever was kept never raises either
        read = (exchange.path, exchange.request_headers, exchange.reason, exchange.response_headers)
        assert tuple(map(type, read)) == (str, tuple, str, tuple)
