"""Differential harness for the HTTP vhost's raw-head and route-cache fast paths.

Two visitor connections get the same reads through the real `RequestReader` and
`HTTPVhostServer.prepare`: the *fast* one keeps its per-connection caches (`route_cache`,
`head_tail`) and the reader's raw heads, exactly as a served connection does; the *reference*
one forgets both before each request and has every head's `raw` taken away, so `prepare`
checks, routes and rebuilds the head (`rewrite.request_head`), as it did before the fast
paths. What each request yields (the bytes for the app, or the answer the vhost wrote itself)
is compared after parsing it with h11, a strict parser: method, target, headers (names
case-insensitive, the Host line may move) and body must be the same, and the headers the vhost
owns must be exactly the vhost's.

The connections have no socket: a `RecordingTransport` keeps what the vhost writes to the
visitor (its error pages). The unit and fuzz tests use this; the integration tests use sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final

import h11

from tunnel_server.vhost import HTTPRoute, HTTPVhostServer, VhostRouter, tcp_opener
from tunnel_server.vhost.exchange import Outcome
from tunnel_server.vhost.inbound import InboundProtocol
from tunnel_server.vhost.lane import Prepared
from tunnel_server.vhost.request import EndOfMessage, ParseFailure, RequestHead, RequestReader

PEER_IP: Final = "192.0.2.7"
MAX_HEADER_BYTES: Final = 4096
# The request headers the vhost writes itself (rewrite.added_headers).
VHOST_OWN: Final = (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                    b"x-real-ip")  # fmt: skip
# The hop-by-hop names the vhost may write itself (a chunked body's framing, an upgrade).
HOP_WRITTEN: Final = {b"transfer-encoding": [b"chunked"]}
H11_EVENTS_MAX: Final = 64  # events read from one forwarded request (a head, pieces, the end)


class RecordingTransport(asyncio.Transport):
    """The visitor's side of a connection with no socket: keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        """Reading pauses when the queue is full; these tests pop it as they go."""

    def resume_reading(self) -> None:
        """See pause_reading."""

    def take(self) -> bytes:
        out = bytes(self.written)
        self.written.clear()
        return out


def connection(server: HTTPVhostServer) -> tuple[InboundProtocol, RecordingTransport]:
    """A visitor connection from PEER_IP whose reads go to a RequestReader."""
    conn = InboundProtocol(lambda _c: None)
    transport = RecordingTransport()
    conn.transport = transport
    conn.peer = (PEER_IP, 40000)
    reader = RequestReader(conn, MAX_HEADER_BYTES)
    conn.feeder = reader.feed
    return conn, transport


def make_route(name: str, **kw: Any) -> HTTPRoute:
    """A route whose opener is never called (prepare only routes)."""
    return HTTPRoute(
        proxy_key=f"client/{name}", proxy_name=name, opener=tcp_opener("127.0.0.1", 9), **kw
    )


@dataclasses.dataclass
class Step:
    """What `prepare` gave for one request: the first write and route, or the vhost's own
    answer (`outcome`, `answer`); then the body items the exchange would take."""

    head: RequestHead
    route: HTTPRoute | None = None
    host: str = ""
    first_write: bytes = b""
    complete: bool = False
    outcome: Outcome | None = None
    answer: bytes = b""
    rest: list[object] = dataclasses.field(default_factory=list)


class Pair:
    """The fast and the reference connection to one server, fed the same reads."""

    def __init__(self, server: HTTPVhostServer) -> None:
        self.server = server
        self.fast, self.fast_out = connection(server)
        self.ref, self.ref_out = connection(server)
        self.fast_steps: list[Step] = []
        self.ref_steps: list[Step] = []
        self.closed = False
        self.failures: list[ParseFailure] = []

    def feed(self, data: bytes, between: Callable[[], None] | None = None) -> None:
        """One read on both connections, then serve what it queued (`between` runs before
        each request is served: a router change)."""
        if self.closed:
            return
        self.fast.data_received(data)
        self.ref.data_received(data)
        self._serve(between)

    def _serve(self, between: Callable[[], None] | None) -> None:
        while not self.closed:
            item = self.fast.peek()
            other = self.ref.peek()
            if item is None:
                assert other is None, other
                return
            if not isinstance(item, RequestHead):
                # a body piece or end the exchange takes, or the end of the connection
                self.fast.pop()
                assert self.ref.pop() == item
                if self.fast_steps:
                    self.fast_steps[-1].rest.append(item)
                    self.ref_steps[-1].rest.append(item)
                if isinstance(item, ParseFailure):
                    self.failures.append(item)
                    self.closed = True
                elif not isinstance(item, (bytes, EndOfMessage)):
                    self.closed = True  # EOF or LOST
                continue
            assert isinstance(other, RequestHead)
            assert dataclasses.replace(other, raw=item.raw) == item
            if between is not None:
                between()
            self.fast.pop()
            self.ref.pop()
            fast = self._prepare(self.fast, self.fast_out, item)
            self.ref.route_cache = None
            self.ref.head_tail = None
            ref = self._prepare(self.ref, self.ref_out, dataclasses.replace(other, raw=None))
            self.fast_steps.append(fast)
            self.ref_steps.append(ref)
            if fast.outcome is Outcome.CLOSE or ref.outcome is Outcome.CLOSE:
                self.closed = True

    def _prepare(
        self, conn: InboundProtocol, transport: RecordingTransport, head: RequestHead
    ) -> Step:
        result = self.server.prepare(conn, head)
        if isinstance(result, Prepared):
            return Step(head, result.route, result.host, result.first_write, result.complete)
        return Step(head, outcome=result, answer=transport.take())


def parse_forwarded(data: bytes) -> tuple[Any, ...]:
    """What a strict HTTP/1.1 server reads from the bytes the vhost sent the app: the request
    (method, target, headers grouped by lowercase name in order) and the body bytes so far,
    or the error h11 raised."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    body = b""
    request: tuple[Any, ...] | None = None
    try:
        for _ in range(H11_EVENTS_MAX):
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                grouped: dict[bytes, list[bytes]] = {}
                for name, value in event.headers:
                    grouped.setdefault(bytes(name), []).append(bytes(value))
                request = (event.method, event.target, event.http_version, grouped)
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                body += b"<end>"
                break
    except h11.RemoteProtocolError as exc:
        return ("h11 error", str(exc))
    return ("request", request, body)


def check_vhost_headers(step: Step) -> None:
    """The headers the vhost owns are exactly its own: one of each, from what it saw."""
    parsed = parse_forwarded(step.first_write)
    assert parsed[0] == "request", parsed
    _, (_, _, _, headers), _ = parsed
    assert len(headers[b"host"]) == 1, headers
    host = step.host.encode("latin-1")  # what the vhost routed by (hostHeaderRewrite aside)
    peer = PEER_IP.encode()
    assert headers[b"x-real-ip"] == [peer]
    assert headers[b"x-forwarded-proto"] == [b"http"]
    assert headers[b"x-forwarded-host"] == [host]
    assert headers[b"forwarded"] == [b'for="%b";host="%b";proto=http' % (peer, host)]
    (chain,) = headers[b"x-forwarded-for"]
    assert chain == peer or chain.endswith(b", " + peer), chain
    upgrade = step.head.upgrade
    if upgrade is not None:  # the vhost writes the upgrade's own Connection and Upgrade
        assert headers.pop(b"connection") == [b"Upgrade"], headers
        assert headers.pop(b"upgrade") == [upgrade], headers
    for name in (b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                 b"te", b"trailer", b"upgrade"):  # fmt: skip
        assert name not in headers, (name, headers)
    assert headers.get(b"transfer-encoding", [b"chunked"]) == [b"chunked"]


def compare(pair: Pair) -> None:
    """Every request the fast connection served gave what the reference gave."""
    assert len(pair.fast_steps) == len(pair.ref_steps)
    for fast, ref in zip(pair.fast_steps, pair.ref_steps, strict=True):
        where = (fast.head.method, fast.head.target, fast.head.raw)
        assert fast.outcome == ref.outcome, where
        assert fast.answer == ref.answer, where
        assert fast.route is ref.route, where
        assert (fast.host, fast.complete) == (ref.host, ref.complete), where
        assert fast.rest == ref.rest, where
        if fast.outcome is None:
            got, want = parse_forwarded(fast.first_write), parse_forwarded(ref.first_write)
            assert got == want, (where, fast.first_write, ref.first_write)
            check_vhost_headers(fast)


def server_for(*routes: HTTPRoute, sub_domain_host: str | None = None) -> HTTPVhostServer:
    """A vhost (not listening) routing `routes`."""
    router = VhostRouter(sub_domain_host, 1000)
    for route in routes:
        router.add(route)
    return HTTPVhostServer(router, max_header_bytes=MAX_HEADER_BYTES)
