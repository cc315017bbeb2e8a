"""Sans-IO capture of the HTTP exchanges on one proxied connection.

Theory of operation:
- The splice hands us *copies* of the bytes it relays: `feed_request` for bytes going to the
  local service, `feed_response` for bytes coming back. We never hold up or alter the relay.
- Two httptools parsers, one per direction, fill `_MessageCollector`s. A request creates a
  `CapturedExchange` when its head is complete and joins `_pending`; responses are matched to
  `_pending` in order (HTTP/1.1 pipelining), skipping 1xx interim responses.
- An exchange is published to the store when its request or its response completes, whichever
  is first, and updated on later progress, so the viewer sees slow requests while they wait.
- Responses to HEAD have headers but no body, which the response parser cannot know. So while
  a HEAD request is pending we feed the response parser exact message boundaries: the head up
  to its blank line, then exactly Content-Length body bytes (chunked bodies byte by byte, up to
  `MAX_BYTEWISE_BODY_BYTES`). After the head of a HEAD response we start a fresh parser. The
  common case, with no HEAD pending, hands every chunk to the parser whole.
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
from typing import Final

import httptools

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, header_value
from tunnel_client.inspect.store import CaptureStore

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 64 * 1024  # request/status line plus headers, per message
MAX_HEADERS: Final = 256  # per message
MAX_PENDING_EXCHANGES: Final = 64  # pipelined requests waiting for their responses
# A chunked response with a HEAD pipelined behind it is fed byte by byte; past this many bytes
# capture stops on the connection rather than spend the CPU.
MAX_BYTEWISE_BODY_BYTES: Final = 256 * 1024
_HEAD_END: Final = b"\r\n\r\n"
# tunneld marks requests it stored while this client was offline (tunnel_server/offline.py).
DELIVERED_LATE_HEADER: Final = "X-Tunnelkit-Delivered-Late"
_DELIVERED_LATE_LOWER: Final = DELIVERED_LATE_HEADER.lower().encode("latin-1")
_DELIVERED_LATE_TAIL: Final = b"delivered-late"  # a cheap first look over the whole head


class _CaptureStopped(Exception):
    """Raised inside parser callbacks to stop capturing; the message says why."""


class _MessageCollector:
    """httptools callbacks that collect one HTTP message at a time, within the bounds.

    The per-header callback only appends: the head's size and header count are checked once
    the head is complete, and after each feed while a head is still incomplete
    (`check_head`), so a head never grows past the bounds by more than one feed. Bodies are
    kept as the parser's own chunks, joined once (not at all when there is one).
    """

    def __init__(
        self,
        max_body_bytes: int,
        on_begin: Callable[[], None],
        on_head: Callable[[], None],
        on_complete: Callable[[], None],
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._on_begin = on_begin
        self._on_head = on_head
        self._on_complete = on_complete
        self.in_message = False
        self.head_done = False  # the current message's head has been parsed
        self.target = b""  # request target, or the response reason phrase
        self.raw_headers: list[bytes] = []  # name, value, name, value, ...
        self._body: list[bytes] = []  # kept chunks, at most max_body_bytes in all
        self._body_kept = 0
        self.body_size = 0

    def check_head(self) -> None:
        """Stop when the head in progress is over the bounds."""
        raw = self.raw_headers
        if len(raw) > 2 * MAX_HEADERS:
            raise _CaptureStopped(f"a message has more than {MAX_HEADERS} headers")
        if len(self.target) + sum(map(len, raw)) > MAX_HEAD_BYTES:
            raise _CaptureStopped(f"a message head is larger than {MAX_HEAD_BYTES} bytes")

    def captured_body(self) -> CapturedBody:
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)  # one chunk: no copy
        return CapturedBody(data, self.body_size, self.body_size > len(data))

    # httptools callbacks (names fixed by httptools)

    def on_message_begin(self) -> None:
        self.in_message = True
        self.head_done = False
        self.target = b""
        self.raw_headers = []
        self._body = []
        self._body_kept = 0
        self.body_size = 0
        self._on_begin()

    def on_url(self, url: bytes) -> None:
        self.target += url
        if len(self.target) > MAX_HEAD_BYTES:
            raise _CaptureStopped(f"a message head is larger than {MAX_HEAD_BYTES} bytes")

    def on_status(self, status: bytes) -> None:
        self.target += status
        if len(self.target) > MAX_HEAD_BYTES:
            raise _CaptureStopped(f"a message head is larger than {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers += (name, value)  # per header line: nothing more (see check_head)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        # latin-1 maps every byte to one character, so replay can restore the exact bytes.
        raw = iter(self.raw_headers)  # name, value, name, value, ...
        pairs = zip(raw, raw, strict=False)
        return tuple([(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs])

    def on_headers_complete(self) -> None:
        self.check_head()
        self.head_done = True
        self._on_head()

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        room = self._max_body_bytes - self._body_kept
        if room > 0:
            if len(body) > room:
                body = body[:room]
            self._body.append(body)
            self._body_kept += len(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.head_done = False
        self._on_complete()

    def restart(self) -> None:
        """Forget the message in progress (its parser is being replaced)."""
        self.in_message = False
        self.head_done = False


@dataclass(slots=True)
class _Slot:
    exchange: CapturedExchange
    started: float  # monotonic seconds
    published: bool = False
    request_done: bool = False
    response_done: bool = False


def _framing(raw_headers: list[bytes]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) from a message's raw headers (name, value, ...)."""
    length: bytes | None = None
    coding = b""
    for index in range(0, len(raw_headers) - 1, 2):
        name = raw_headers[index]
        size = len(name)  # most names fail on their length
        if size == 14 and length is None and name.lower() == b"content-length":
            length = raw_headers[index + 1]
        elif size == 17 and not coding and name.lower() == b"transfer-encoding":
            coding = raw_headers[index + 1]
    return (int(length) if length is not None and length.isdigit() else None), (
        b"chunked" in coding.lower()
    )


def _stop_reason(exc: BaseException) -> str:
    cause = exc.__context__
    if isinstance(cause, _CaptureStopped):
        return str(cause)
    if isinstance(exc, _CaptureStopped):
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
        self._req = _MessageCollector(
            limit, self._request_begin, self._request_head, self._request_complete
        )
        self._resp = _MessageCollector(
            limit, self._response_begin, self._response_head, self._response_complete
        )
        self._req_parser = httptools.HttpRequestParser(self._req)
        self._resp_parser = httptools.HttpResponseParser(self._resp)
        self._requests_open = True
        self._responses_open = True
        self._pending: deque[_Slot] = deque()  # oldest first; bounded by MAX_PENDING_EXCHANGES
        self._heads_pending = 0  # HEAD requests in _pending (their responses need exact framing)
        self._req_slot: _Slot | None = None  # the request being received
        self._resp_slot: _Slot | None = None  # the exchange the current response belongs to
        self._interim = False  # the current response is 1xx (not 101)
        self._req_started = (0.0, 0.0)  # (monotonic, wall) when the current request began
        # Exact framing state (used only while a HEAD is pending):
        self._head_tail = b""  # last bytes of a head in progress, to find CRLF CRLF in pieces
        # (Content-Length, chunked) of the current response, read from its head on first need
        self._resp_framing: tuple[int | None, bool] | None = None
        self._bytewise_fed = 0  # body bytes fed one at a time for the current response
        self._restart_parser = False  # the head of a HEAD response was just parsed
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
            self._req_parser.feed_data(data)
            if self._req.in_message and not self._req.head_done:
                self._req.check_head()  # a head still incomplete after this feed
        except httptools.HttpParserUpgrade:
            self._stop_requests("the request switched protocols; capture ends after its reply")
        except Exception as exc:
            self._stop_requests(_stop_reason(exc))

    def feed_response(self, data: bytes) -> None:
        """Feed bytes the local service sent back."""
        if not self._responses_open or not data:
            return
        try:
            self._feed_response(memoryview(data))
        except httptools.HttpParserUpgrade:
            self._stop_all("the connection switched protocols")
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
                headers = slot.exchange.response_headers
                framed = header_value(headers, "content-length") is not None or (
                    "chunked" in (header_value(headers, "transfer-encoding") or "").lower()
                )
                if framed:
                    slot.exchange.error = "the connection closed before the response ended"
                # Without a length the body runs to the end of the connection, so it is whole.
                self._finish_response(slot, self._resp.captured_body())
            reason = reset_reason or "the connection closed"
            if reset_reason:
                self._stop_all(reason)
            else:
                self._stop_all(f"{reason} before a response arrived" if self._pending else reason)
        except Exception as exc:
            logger.debug("[proxy=%s] capture failed at close: %r", self._proxy, exc)

    def _feed_response(self, view: memoryview) -> None:
        # Each pass feeds at least one byte or returns, so the loop is bounded by len(view).
        while view and self._responses_open:
            if not self._heads_pending:
                self._resp_parser.feed_data(view)
                # Keep the end of a head in progress, in case exact framing starts mid-head.
                if self._resp.in_message and not self._resp.head_done:
                    self._resp.check_head()
                    self._head_tail = (self._head_tail + bytes(view[-3:]))[-3:]
                elif self._head_tail:
                    self._head_tail = b""
                return
            step = self._exact_step(view)
            self._resp_parser.feed_data(view[:step])
            view = view[step:]
            if self._resp.in_message and not self._resp.head_done:
                self._resp.check_head()
            if self._restart_parser:
                # A HEAD response's head was parsed: its "body" is the next response.
                self._restart_parser = False
                self._head_tail = b""
                self._resp.restart()
                self._resp_parser = httptools.HttpResponseParser(self._resp)

    def _exact_step(self, view: memoryview) -> int:
        """How many bytes of `view` to feed so the parser stops at the next boundary."""
        if not self._resp.head_done:
            tail = self._head_tail
            probe = tail + bytes(view[: MAX_HEAD_BYTES + len(_HEAD_END)])
            found = probe.find(_HEAD_END)
            if found < 0:
                self._head_tail = probe[-(len(_HEAD_END) - 1) :]
                return len(probe) - len(tail)
            self._head_tail = b""
            return found + len(_HEAD_END) - len(tail)
        if self._resp_framing is None:
            self._resp_framing = _framing(self._resp.raw_headers)
        length, chunked = self._resp_framing
        if length is not None:
            return max(1, min(len(view), length - self._resp.body_size))
        if chunked:
            self._bytewise_fed += 1
            if self._bytewise_fed > MAX_BYTEWISE_BODY_BYTES:
                raise _CaptureStopped("a HEAD was pipelined behind a large chunked response")
            return 1
        return len(view)  # the body runs to the end of the connection

    # request side

    def _request_begin(self) -> None:
        self._req_started = (self._clock(), self._wall_clock())

    def _request_head(self) -> None:
        if len(self._pending) >= MAX_PENDING_EXCHANGES:
            raise _CaptureStopped(f"more than {MAX_PENDING_EXCHANGES} requests await responses")
        started, wall = self._req_started
        request = self._req
        exchange = CapturedExchange(
            self._store.new_id(),
            self._proxy,
            wall,
            self._req_parser.get_method().decode("latin-1"),
            request.target.decode("latin-1"),
            self._req_parser.get_http_version(),
            request.headers,
            mocked=self._label,
        )
        if _DELIVERED_LATE_TAIL in b"".join(request.raw_headers).lower():  # rare: look closer
            late = _DELIVERED_LATE_LOWER
            names = request.raw_headers[::2]
            exchange.late = any(len(n) == len(late) and n.lower() == late for n in names)
        slot = _Slot(exchange, started)
        self._pending.append(slot)
        if exchange.method == "HEAD":
            self._heads_pending += 1
        self._req_slot = slot

    def _request_complete(self) -> None:
        slot = self._req_slot
        if slot is None:
            return
        self._req_slot = None
        slot.exchange.request_body = self._req.captured_body()
        slot.request_done = True
        self._publish(slot)

    # response side

    def _response_begin(self) -> None:
        if not self._pending:
            raise _CaptureStopped("a response arrived with no request waiting for it")
        self._bytewise_fed = 0

    def _response_head(self) -> None:
        status = self._resp_parser.get_status_code()
        self._resp_framing = None  # read from the head only if exact framing needs it
        if 100 <= status < 200 and status != 101:
            self._interim = True  # e.g. 100 Continue: the real response follows
            return
        slot = self._pending[0]
        self._resp_slot = slot
        exchange = slot.exchange
        exchange.status = status
        exchange.reason = self._resp.target.decode("latin-1")
        exchange.response_http_version = self._resp_parser.get_http_version()
        exchange.response_headers = self._resp.headers
        if exchange.method == "HEAD":
            self._finish_response(slot, CapturedBody())
            self._restart_parser = True
        elif status == 101 or (exchange.method == "CONNECT" and 200 <= status < 300):
            self._finish_response(slot, CapturedBody())
            raise _CaptureStopped("the connection switched protocols")

    def _response_complete(self) -> None:
        self._head_tail = b""
        if self._interim:
            self._interim = False
            return
        slot = self._resp_slot
        if slot is not None:
            self._finish_response(slot, self._resp.captured_body())
        if not self._requests_open and not self._pending:
            self._stop_all("requests stopped being captured earlier")

    def _finish_response(self, slot: _Slot, body: CapturedBody) -> None:
        slot.exchange.response_body = body
        slot.exchange.duration_ms = round((self._clock() - slot.started) * 1000.0, 3)
        slot.response_done = True
        if self._pending and self._pending[0] is slot:
            self._pending.popleft()
            if slot.exchange.method == "HEAD":
                self._heads_pending -= 1
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
            slot.exchange.request_body = self._req.captured_body()
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
        self._heads_pending = 0
        for slot in pending:
            if not slot.response_done:
                slot.exchange.error = slot.exchange.error or reason
                if not slot.request_done and slot is self._req_slot:
                    slot.exchange.request_body = self._req.captured_body()
                self._publish(slot)
        self._req_slot = None
        self._resp_slot = None
