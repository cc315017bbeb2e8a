"""Unit tests for the request reader and the response relay (bytes in, items or bytes out)."""

from __future__ import annotations

import pytest

from tunnel_server.vhost.inbound import InboundProtocol
from tunnel_server.vhost.request import (
    END_OF_MESSAGE,
    EndOfMessage,
    ParseFailure,
    RequestHead,
    RequestReader,
)
from tunnel_server.vhost.response import BadResponse, ResponseRelay
from tunnel_server.vhost.rewrite import Framing, HeaderRules, compile_rules

RULES: HeaderRules = compile_rules(
    host_header_rewrite=None,
    request_headers_set={},
    response_headers_set={"X-Via": "tk"},
    http_user=None,
    http_password=None,
)


def read_items(*chunks: bytes, max_header_bytes: int = 1024) -> list[object]:
    conn = InboundProtocol(lambda c: None)
    reader = RequestReader(conn, max_header_bytes)
    conn.feeder = reader.feed
    for data in chunks:
        conn.data_received(data)
    items = []
    while (item := conn.pop()) is not None:
        items.append(item)
    return items


def test_parsing_simple_request() -> None:
    """A GET becomes a head and an end marker, with Host and keep-alive noted."""
    items = read_items(b"GET /a?b=1 HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n")
    assert len(items) == 2 and items[1] is END_OF_MESSAGE
    head = items[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.host, head.http11) == (
        b"GET",
        b"/a?b=1",
        b"a.test",
        True,
    )
    assert head.keep_alive and head.framing is Framing.NONE and not head.switching


def test_parsing_byte_by_byte_and_pipelined() -> None:
    """Requests split into single bytes and pipelined back to back parse the same."""
    raw = (
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /2 HTTP/1.0\r\nHost: b\r\n\r\n"
    )
    items = read_items(*(raw[i : i + 1] for i in range(len(raw))))
    heads = [i for i in items if isinstance(i, RequestHead)]
    assert [h.target for h in heads] == [b"/1", b"/2"]
    assert heads[0].framing is Framing.LENGTH and heads[1].keep_alive is False
    body = b"".join(i for i in items if isinstance(i, bytes))
    assert body == b"hello"
    assert sum(isinstance(i, EndOfMessage) for i in items) == 2


def test_parsing_chunked_with_trailers() -> None:
    """A chunked body is decoded and its trailers kept for the end marker."""
    items = read_items(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
    )
    head = items[0]
    assert isinstance(head, RequestHead) and head.framing is Framing.CHUNKED
    assert b"".join(i for i in items if isinstance(i, bytes)) == b"abcde"
    end = items[-1]
    assert isinstance(end, EndOfMessage) and end.trailers == [(b"X-Sum", b"5")]


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ],
)
def test_parsing_malformed_is_400(raw: bytes) -> None:
    """Malformed and smuggling-shaped requests end in a 400 failure item."""
    items = read_items(raw, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    failure = items[-1]
    assert isinstance(failure, ParseFailure) and failure.status == 400


def test_parsing_header_limit_is_431() -> None:
    """Heads over max_header_bytes fail with 431, whether in one header or many, in any split."""
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n"
    for chunks in ([big], [big[:100], big[100:]], [big[i : i + 7] for i in range(0, len(big), 7)]):
        items = read_items(*chunks)
        assert isinstance(items[-1], ParseFailure) and items[-1].status == 431
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: 1\r\n" * 300 + b"\r\n"
    items = read_items(many)
    assert isinstance(items[-1], ParseFailure) and items[-1].status == 431


def test_parsing_upgrade_switches_to_raw() -> None:
    """After an upgrade request the rest of the input is queued as raw bytes."""
    items = read_items(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
        b"GET / HTTP/1.1\r\n",
    )
    head = items[0]
    assert isinstance(head, RequestHead) and head.switching and head.upgrade == b"websocket"
    assert items[1] is END_OF_MESSAGE
    assert items[2:] == [b"\x81\x00", b"GET / HTTP/1.1\r\n"]


def relay_for(
    *, head_request: bool = False, http11: bool = True, upgrade: bool = False
) -> ResponseRelay:
    relay = ResponseRelay(4096)
    relay.start(
        rules=RULES,
        head_request=head_request,
        client_http11=http11,
        client_keep_alive=True,
        upgrade_requested=upgrade,
    )
    return relay


def run_relay(relay: ResponseRelay, *chunks: bytes, eof: bool = False) -> bytes:
    out = b""
    for data in chunks:
        relay.feed(data)
        out += b"".join(relay.take())
    if eof:
        relay.feed_eof()
        out += b"".join(relay.take())
    return out


def test_relay_content_length_passthrough() -> None:
    """A Content-Length response keeps its length; the stream stays reusable."""
    relay = relay_for()
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello"
    out = run_relay(relay, raw[:20], raw[20:])
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Via: tk\r\n\r\nhello"
    assert relay.complete and relay.reusable and relay.keep_visitor


def test_relay_chunked_reframed() -> None:
    """A chunked response is decoded and re-chunked, trailers included."""
    relay = relay_for()
    out = run_relay(
        relay,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n0\r\nX-T: 1\r\n\r\n",
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"3\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: 1\r\n\r\n"
    assert relay.complete and relay.reusable


def test_relay_until_close_becomes_chunked_for_http11() -> None:
    """An until-close response reaches an HTTP/1.1 visitor chunked, so its connection lives."""
    relay = relay_for()
    out = run_relay(relay, b"HTTP/1.0 200 OK\r\n\r\nabc", b"def", eof=True)
    assert out.endswith(b"\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
    assert relay.complete and relay.keep_visitor and not relay.reusable


def test_relay_until_close_for_http10_visitor() -> None:
    """An HTTP/1.0 visitor gets the body raw and a closing connection."""
    relay = relay_for(http11=False)
    out = run_relay(relay, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert b"Connection: close" in out and out.endswith(b"\r\n\r\nabc")
    assert not relay.keep_visitor


def test_relay_head_response_has_no_body() -> None:
    """A response to HEAD completes at its head; the next response parses on a fresh parser."""
    relay = relay_for(head_request=True)
    out = run_relay(relay, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert out.endswith(b"Content-Length: 100\r\nX-Via: tk\r\n\r\n")
    assert relay.complete and relay.reusable
    relay.start(
        rules=RULES,
        head_request=False,
        client_http11=True,
        client_keep_alive=True,
        upgrade_requested=False,
    )
    out = run_relay(relay, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n") and relay.complete


def test_relay_interim_then_final() -> None:
    """100 Continue is forwarded to HTTP/1.1 visitors before the final response."""
    relay = relay_for()
    out = run_relay(
        relay, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")
    assert relay.complete and relay.status == 201


def test_relay_switching_protocols_keeps_leftover() -> None:
    """After a 101 the bytes following the head are passed on raw."""
    relay = relay_for(upgrade=True)
    out = run_relay(
        relay,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n",
        b"Upgrade: websocket\r\n\r\n\x81\x01a",
    )
    assert out.endswith(b"Upgrade: websocket\r\n\r\n\x81\x01a")
    assert relay.upgraded and not relay.reusable


def test_relay_unasked_101_is_bad() -> None:
    """A 101 to a request that did not ask to upgrade is refused."""
    with pytest.raises(BadResponse):
        run_relay(relay_for(), b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")


def test_relay_errors() -> None:
    """Garbage, oversized heads and early EOF are BadResponse; extra bytes spoil reuse."""
    with pytest.raises(BadResponse):
        run_relay(relay_for(), b"NOT HTTP\r\n\r\n")
    with pytest.raises(BadResponse):
        run_relay(relay_for(), b"HTTP/1.1 200 OK\r\nX: " + b"x" * 5000 + b"\r\n\r\n")
    with pytest.raises(BadResponse):
        run_relay(relay_for(), b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True)
    with pytest.raises(BadResponse):
        run_relay(relay_for(), b"", eof=True)
    relay = relay_for()
    run_relay(relay, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naEXTRA")
    assert relay.complete and not relay.reusable


class FakeTransport:
    """Just enough of a transport for InboundProtocol's flow control."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False


def test_inbound_tiny_chunks_pause_reading() -> None:
    """A flood of 1-byte chunks pauses reading long before it costs real memory, and reading
    resumes once the consumer drains the queue."""
    conn = InboundProtocol(lambda c: None)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    reader = RequestReader(conn, 1024)
    conn.feeder = reader.feed
    conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = 0
    while not transport.paused and sent < 100_000:
        conn.data_received(b"1\r\nx\r\n" * 100)
        sent += 100
    assert transport.paused and sent < 10_000
    assert conn.peer == ("192.0.2.1", 5555)
    while conn.pop() is not None:
        pass
    assert not transport.paused and conn.queued_bytes == 0
