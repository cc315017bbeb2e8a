"""Sans-IO capture of the HTTP exchanges on one proxied connection.

Theory of operation:
- The splice hands us *copies* of the bytes it relays: `feed_request` for bytes going to the
  local service, `feed_response` for bytes coming back. We never hold up or alter the relay.
- Two httptools parsers, one per direction (`MessageSide`), with no per-header callback: llhttp
  parses and checks each head in C, and the head is kept as its raw bytes. The exchange
  parses and decodes them only when someone reads its target, reason or headers (the page,
  the API, replay, export, history: exchange.py), so an exchange evicted unseen costs no
  parsing in Python. A head the parser refuses is kept raw too, with the parser's reason.
- To keep heads raw, each side feeds its parser exact pieces: a head up to its CRLF CRLF
  (llhttp is strict, so that is where the parser ends it too), then the body up to the
  message's end (Content-Length bytes; a chunked body up to each CRLF CRLF, after which the
  parser says whether the message ended; else to the end of the connection). The parser
  stays the judge: when it and the cut disagree, capture stops.
- A request creates a `CapturedExchange` when its head is complete and joins `_pending`;
  responses are matched to `_pending` in order (HTTP/1.1 pipelining), skipping 1xx interim
  responses. Responses to HEAD have headers but no body, which the parser cannot know: after
  such a head the side starts a fresh parser.
- An exchange is published to the store when its request or its response completes, whichever
  is first, and updated on later progress, so the viewer sees slow requests while they wait.
- Capture stops, without ever raising into the caller, on: a parse error, an Upgrade or
  CONNECT (the rest of the connection is not HTTP), or a bound being reached. Exchanges still
  waiting are published with `error` saying why. After a stop every feed is a no-op.

Bounds: message heads to `MAX_HEAD_BYTES` and `MAX_HEADERS`, bodies to the store's
`max_body_bytes` (the rest is counted, not kept), and `MAX_PENDING_EXCHANGES` pipelined
requests; beyond a bound, capture stops on this connection.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

import httptools

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.sides import (
    MAX_BAD_METHOD_CHARS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_PENDING_EXCHANGES,
    BadHead,
    CaptureStopped,
    MessageSide,
)
from tunnel_client.inspect.store import CaptureStore

logger = logging.getLogger(__name__)

__all__ = ["MAX_HEADERS", "MAX_HEAD_BYTES", "MAX_PENDING_EXCHANGES", "HTTPCapture"]
# tunneld marks requests it stored while this client was offline (tunnel_server/offline.py).
DELIVERED_LATE_HEADER: Final = "X-Tunnelkit-Delivered-Late"
_DELIVERED_LATE_TAIL: Final = b"delivered-late"  # a cheap first look over the whole head
# The usual versions read off the raw start line (the parser's getter formats a new string
# each call, about 0.8 us); any other asks the parser.
_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}


@dataclass(slots=True)
class _Slot:
    exchange: CapturedExchange
    started: float  # monotonic seconds
    published: bool = False
    request_done: bool = False
    response_done: bool = False


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, CaptureStopped):
        return str(exc)
    return f"not parseable as HTTP/1.x ({type(exc).__name__}: {exc})"


class HTTPCapture:
    """Capture the exchanges of one proxied HTTP connection into a `CaptureStore`."""

    def __init__(
        self,
        store: CaptureStore,
        proxy: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._proxy = proxy
        self._clock = clock
        self._wall_clock = wall_clock
        limit = store.max_body_bytes
        self._req = MessageSide(
            True, limit, self._request_begin, self._request_head, self._request_complete
        )
        self._resp = MessageSide(
            False, limit, self._response_begin, self._response_head, self._response_complete
        )
        self._requests_open = True
        self._responses_open = True
        self._pending: deque[_Slot] = deque()  # oldest first; bounded by MAX_PENDING_EXCHANGES
        self._heads = 0  # HEAD requests in _pending (their responses have no body)
        self._req_slot: _Slot | None = None  # the request being received
        self._resp_slot: _Slot | None = None  # the exchange the current response belongs to
        self._interim = False  # the current response is 1xx (not 101)
        self._req_started = (0.0, 0.0)  # (monotonic, wall) when the current request began
        self._closed = False
        self.stop_reason: str | None = None  # why capture stopped first, for logs and tests
        self._label: str | None = None  # set when a mock rule answers this connection

    def label(self, text: str) -> None:
        """Mark this connection's exchanges (a mock rule answered them), now and later."""
        self._label = text
        for slot in self._pending:
            slot.exchange.mocked = text
            if slot.published:
                self._store.update(slot.exchange)

    @property
    def idle(self) -> bool:
        """Between exchanges: no request awaits its response and no message is half parsed."""
        return not self._pending and not self._req.in_message and not self._resp.in_message

    @property
    def capturing(self) -> bool:
        """False once capture has stopped on this connection."""
        return self._responses_open

    # feeding (never raises)

    def feed_request(self, data: bytes) -> None:
        """Feed bytes the user sent towards the local service."""
        if not self._requests_open or not data:
            return
        try:
            self._req.feed(data)
        except httptools.HttpParserUpgrade:
            self._stop_requests("the request switched protocols; capture ends after its reply")
        except BadHead as exc:
            self._bad_request_head(exc)
        except Exception as exc:
            self._stop_requests(_stop_reason(exc))

    def feed_response(self, data: bytes) -> None:
        """Feed bytes the local service sent back."""
        if not self._responses_open or not data:
            return
        try:
            self._resp.feed(data)
        except httptools.HttpParserUpgrade:
            self._stop_all("the connection switched protocols")
        except BadHead as exc:
            self._bad_response_head(exc)
        except Exception as exc:
            self._stop_all(_stop_reason(exc))

    def close(self, reset_reason: str = "") -> None:
        """The connection ended: publish what is left and stop (idempotent). `reset_reason`
        is why the stream was reset, when it was (e.g. "connection refused to 127.0.0.1:8000")."""
        if self._closed:
            return
        self._closed = True
        try:
            slot = self._resp_slot
            if self._responses_open and slot is not None and not self._interim:
                if self._resp.framed:
                    slot.exchange.error = "the connection closed before the response ended"
                # Without a length the body runs to the end of the connection, so it is whole.
                self._finish_response(slot, self._resp.collector.captured_body())
            reason = reset_reason or "the connection closed"
            if reset_reason:
                self._stop_all(reason)
            else:
                self._stop_all(f"{reason} before a response arrived" if self._pending else reason)
        except Exception as exc:
            logger.debug("[proxy=%s] capture failed at close: %r", self._proxy, exc)

    # request side

    def _request_begin(self) -> None:
        self._req_started = (self._clock(), self._wall_clock())

    def _new_exchange(self, method: str, version: str, head: bytes) -> _Slot:
        if len(self._pending) >= MAX_PENDING_EXCHANGES:
            raise CaptureStopped(f"more than {MAX_PENDING_EXCHANGES} requests await responses")
        started, wall = self._req_started
        exchange = CapturedExchange(
            self._store.new_id(),
            self._proxy,
            wall,
            method,
            http_version=version,
            request_head=head,
            mocked=self._label,
        )
        slot = _Slot(exchange, started)
        self._pending.append(slot)
        if method == "HEAD":
            self._heads += 1
            self._resp.fast_bodies = False
        self._req_slot = slot
        return slot

    def _request_head(self, head: bytes) -> bool:
        parser = cast(httptools.HttpRequestParser, self._req.parser)
        line_end = head.find(b"\r\n")  # llhttp is strict: "... HTTP/x.y" CRLF
        version = _VERSIONS.get(head[line_end - 3 : line_end]) or parser.get_http_version()
        exchange = self._new_exchange(parser.get_method().decode("latin-1"), version, head).exchange
        if _DELIVERED_LATE_TAIL in head.lower():  # rare: look closer
            late = DELIVERED_LATE_HEADER.lower()
            exchange.late = any(name.lower() == late for name, _ in exchange.request_headers)
        return False

    def _bad_request_head(self, bad: BadHead) -> None:
        """Keep a head the parser refused, raw, as an exchange that says why; then stop."""
        reason = f"the request head is not parseable as HTTP/1.x ({bad})"
        try:
            method = bad.head.split(b" ", 1)[0][:MAX_BAD_METHOD_CHARS].decode("latin-1")
            slot = self._new_exchange(method, "", bad.head)
            slot.exchange.request_head_error = reason
        except CaptureStopped:
            pass
        self._stop_requests(reason)

    def _request_complete(self) -> None:
        slot = self._req_slot
        if slot is None:
            return
        self._req_slot = None
        slot.exchange.request_body = self._req.collector.captured_body()
        slot.request_done = True
        self._publish(slot)

    # response side

    def _response_begin(self) -> None:
        if not self._pending:
            raise CaptureStopped("a response arrived with no request waiting for it")

    def _response_head(self, head: bytes) -> bool:
        parser = cast(httptools.HttpResponseParser, self._resp.parser)
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # e.g. 100 Continue: the real response follows
            return False
        slot = self._pending[0]
        self._resp_slot = slot
        exchange = slot.exchange
        exchange.status = status
        exchange.response_http_version = _VERSIONS.get(head[5:8]) or parser.get_http_version()
        exchange.response_head = head
        if exchange.method == "HEAD":
            # Headers but no body, which the parser cannot know: start over after the head.
            self._finish_response(slot, CapturedBody())
            return True
        if status == 101 or (exchange.method == "CONNECT" and 200 <= status < 300):
            self._finish_response(slot, CapturedBody())
            raise CaptureStopped("the connection switched protocols")
        return False

    def _bad_response_head(self, bad: BadHead) -> None:
        reason = f"the response head is not parseable as HTTP/1.x ({bad})"
        if self._pending:
            exchange = self._pending[0].exchange
            exchange.response_head = bad.head
            exchange.response_head_error = reason
        self._stop_all(reason)

    def _response_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        slot = self._resp_slot
        if slot is not None:
            self._finish_response(slot, self._resp.collector.captured_body())
        if not self._requests_open and not self._pending:
            self._stop_all("requests stopped being captured earlier")

    def _finish_response(self, slot: _Slot, body: CapturedBody) -> None:
        slot.exchange.response_body = body
        slot.exchange.duration_ms = round((self._clock() - slot.started) * 1000.0, 3)
        slot.response_done = True
        if self._pending and self._pending[0] is slot:
            self._pending.popleft()
            if slot.exchange.method == "HEAD":
                self._heads -= 1
                self._resp.fast_bodies = not self._heads
        self._resp_slot = None
        self._publish(slot)

    # stopping and publishing

    def _publish(self, slot: _Slot) -> None:
        if slot.published:
            self._store.update(slot.exchange)
        else:
            slot.published = True
            self._store.add(slot.exchange)

    def _stop_requests(self, reason: str) -> None:
        if not self._requests_open:
            return
        self._requests_open = False
        self.stop_reason = reason
        slot = self._req_slot
        self._req_slot = None
        if slot is not None and not slot.request_done:
            slot.exchange.request_body = self._req.collector.captured_body()
            slot.exchange.error = f"capture stopped: {reason}"
            self._publish(slot)
        if self._pending:
            logger.debug("[proxy=%s] request capture stopped: %s", self._proxy, reason)
        else:
            self._stop_all(reason)

    def _stop_all(self, reason: str) -> None:
        if not self._responses_open:
            return
        self._requests_open = False
        self._responses_open = False
        self.stop_reason = self.stop_reason or reason
        logger.debug("[proxy=%s] capture stopped: %s", self._proxy, reason)
        pending = list(self._pending)
        self._pending.clear()
        self._heads = 0
        for slot in pending:
            if not slot.response_done:
                slot.exchange.error = slot.exchange.error or reason
                if not slot.request_done and slot is self._req_slot:
                    slot.exchange.request_body = self._req.collector.captured_body()
                self._publish(slot)
        self._req_slot = None
        self._resp_slot = None
