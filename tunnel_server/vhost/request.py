"""Parse the visitor's requests (httptools/llhttp) into items for the connection's queue.

`RequestReader.feed` is the HTTP-mode feeder of an `InboundProtocol`. For each request it
queues a `RequestHead`, then the body as decoded pieces (bytes), then an `EndOfMessage`.
Pipelined requests queue one after another; the queue's byte budget bounds them.

llhttp is strict where it matters for a proxy (it rejects Content-Length with
Transfer-Encoding, duplicate Content-Length, bad chunk sizes), so the vhost re-frames each body
from what the parser decoded instead of forwarding raw bytes: what the app receives is exactly
what we parsed. llhttp has no header size limit, so the reader enforces `max_header_bytes`.

Every byte that is not body is bounded (issue #8): the head and the trailers each count
against `max_header_bytes` (431 for a head, 400 for trailers), and a raw counter of the bytes
fed since the parser last made progress (a head or trailer complete, a chunk-size line
complete, body bytes) catches one endless line anywhere: a header or trailer line, a
chunk-size line or a chunk extension. httptools joins a header value across reads in memory,
so without that counter an endless trailer after `0\r\n` was buffered without limit.

A request that fails to parse is taken back out of the queue if the connection's task has not
taken its head yet, so a malformed request sent in one piece never reaches the app (the
visitor gets the 400). A body that turns malformed later resets the upstream stream.

After a request that asks for an upgrade (`Connection: upgrade` + `Upgrade`), llhttp stops and
the rest of the input is queued raw, to be spliced if the app answers 101.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

import httptools

from .inbound import InboundProtocol
from .rewrite import REQUEST_OWN, Framing

logger = logging.getLogger(__name__)

HEAD_OVERHEAD_BYTES: Final = 4  # ": " and CRLF per header line, for the size estimate
# A head kept raw (RequestHead.raw) has exactly these bytes besides its URL, names and values
# (counted in the head size): " " and " HTTP/1.1\r\n" on the request line, the closing CRLF.
RAW_HEAD_EXTRA_BYTES: Final = 14
# The names the vhost replaces or drops (rewrite.REQUEST_OWN) but Host: a head with one of
# them is rebuilt. Their lengths, so that most headers are not lowercased to look.
_OWN_NOT_HOST: Final = REQUEST_OWN - {b"host"}
_OWN_LENGTHS: Final = frozenset(len(name) for name in _OWN_NOT_HOST)


@dataclass(slots=True)
class RequestHead:
    """A parsed request head, as the parser saw it."""

    method: bytes
    target: bytes
    http11: bool
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    framing: Framing  # NONE, LENGTH or CHUNKED
    host: bytes | None  # the Host header; None if absent
    host_count: int
    connection_tokens: frozenset[bytes]
    transfer_encoding: bytes
    switching: bool  # llhttp stopped after this head: what follows is raw (upgrade, CONNECT)
    upgrade: bytes | None  # the Upgrade header when llhttp saw a valid upgrade request
    authorization: bytes | None
    expect_continue: bool
    size: int  # approximate bytes of the head, for the queue budget
    # The visitor's head exactly as it came, when it can be forwarded as it is with the
    # vhost's own headers appended (`raw_head_ok`); None when it must be rebuilt.
    raw: bytes | None = None


@dataclass(slots=True)
class EndOfMessage:
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


_NO_TOKENS: Final[frozenset[bytes]] = frozenset()
END_OF_MESSAGE: Final = EndOfMessage()  # shared instance for the common no-trailer case


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """The request stream is broken; answer `status` and close."""

    status: int
    detail: str


class _HeadTooLarge(Exception):
    pass


class RequestReader:
    """httptools callbacks plus the size accounting; one per visitor connection."""

    def __init__(self, conn: InboundProtocol, max_header_bytes: int) -> None:
        self._conn = conn
        self._max = max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._head_size = 0  # the current head's (or trailers') size, as parsed
        self._stalled = 0  # raw bytes fed since the parser last made progress
        self._progress = False  # a progress callback ran during this feed
        self._message_mark = 0  # conn.pushed when the current message began
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._host: bytes | None = None
        self._host_count = 0
        self._tokens: set[bytes] | None = None
        self._te = b""
        self._authorization: bytes | None = None
        self._expect = False
        self._upgrade: bytes | None = None
        self._framing = Framing.NONE
        self._length = b""  # the Content-Length value (llhttp checks it)
        self.head_started = False  # a head is partly received (for the slow-header timeout)
        self._last = False  # a whole request that closes the connection was parsed
        # Raw heads (RequestHead.raw): the read being parsed, where in it the next message
        # begins (-1: not known, e.g. it began in an earlier read or after a body) and where
        # the current one began; a header the vhost owns makes the head not `_plain`.
        self._in_message = False
        self._data = b""
        self._raw_from = -1
        self._raw_start = -1
        self._plain = True

    def feed(self, data: bytes) -> None:
        conn = self._conn
        self._progress = False
        self._data = data
        if self._in_message:  # it began in an earlier read: its head is not all in `data`
            self._raw_from = self._raw_start = -1
        else:
            self._raw_from = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._data = b""
            offset = int(exc.args[0])
            conn.feeder = conn.push_bytes
            if offset < len(data):
                conn.push_bytes(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            self._data = b""
            if isinstance(exc.__context__, _HeadTooLarge):
                self._fail_too_large()
            else:
                # A bug in our callbacks: log it, and treat it like a malformed request.
                logger.error("request parser callback failed", exc_info=exc)
                self._fail(400, "malformed request")
            return
        except httptools.HttpParserError as exc:
            self._data = b""
            if self._last:
                # Bytes after a request that closes the connection (llhttp refuses them): that
                # request stands and is answered; what follows it is dropped unread.
                conn.feeder = conn.discard
                return
            self._fail(400, f"malformed request: {exc}")
            return
        self._data = b""
        # Reset on progress: the bytes of this read after the last progress callback are not
        # counted, so an endless line is caught at most one read past the limit.
        self._stalled = 0 if self._progress else self._stalled + len(data)
        if self._stalled > self._max:
            self._fail_too_large()

    def _fail_too_large(self) -> None:
        if self._trailers is None:
            self._fail(431, "request headers too large")
        else:  # the head is done: trailers, a chunk-size line or a chunk extension
            self._fail(400, "request trailers or chunk-size line too large")

    def _fail(self, status: int, detail: str) -> None:
        conn = self._conn
        conn.feeder = conn.discard
        conn.body_bytes_left = 0
        # Take the broken request back if its head is still queued: no byte of it reaches the
        # app, the visitor gets the error page instead.
        conn.retract_since(self._message_mark)
        conn.push(ParseFailure(status, detail), 0)

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_started = True
        self._in_message = True
        self._raw_start = self._raw_from
        self._raw_from = -1
        self._plain = True
        self._progress = True
        self._message_mark = self._conn.pushed
        self._head_size = 0
        self._url = b""
        self._headers = []
        self._trailers = None
        self._host = None
        self._host_count = 0
        self._tokens = None
        self._te = b""
        self._authorization = None
        self._expect = False
        self._upgrade = None
        self._framing = Framing.NONE
        self._length = b""
        self._conn.notify()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max:
            raise _HeadTooLarge

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self._max:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            self._grow(len(name) + len(value) + HEAD_OVERHEAD_BYTES)
            self._trailers.append((name, value))
            return
        self._head_size += len(name) + len(value) + HEAD_OVERHEAD_BYTES
        if self._head_size > self._max:
            raise _HeadTooLarge
        self._headers.append((name, value))
        # Dispatch on length first: most headers need no lowercasing at all.
        n = len(name)
        if n in _OWN_LENGTHS and self._plain and name.lower() in _OWN_NOT_HOST:
            self._plain = False
        if n == 4:
            if name.lower() == b"host":
                self._host = value
                self._host_count += 1
        elif n == 10:
            if name.lower() == b"connection":
                tokens = self._tokens if self._tokens is not None else set()
                tokens.update(t.strip().lower() for t in value.split(b","))
                self._tokens = tokens
        elif n == 17:
            if name.lower() == b"transfer-encoding":
                self._te = value if not self._te else self._te + b", " + value
        elif n == 13:
            if name.lower() == b"authorization":
                self._authorization = value
        elif n == 6:
            if name.lower() == b"expect" and value.strip().lower() == b"100-continue":
                self._expect = True
        elif n == 7:
            if name.lower() == b"upgrade":
                self._upgrade = value
        elif n == 14:
            if name.lower() == b"content-length":
                self._framing = Framing.LENGTH
                self._length = value

    def on_headers_complete(self) -> None:
        parser = self._parser
        self.head_started = False
        self._progress = True
        if self._te:
            self._framing = Framing.CHUNKED  # llhttp already refused a TE without chunked
        elif self._framing is Framing.LENGTH and self._length.strip().isdigit():
            self._conn.body_bytes_left = int(self._length)
        tokens = frozenset(self._tokens) if self._tokens is not None else _NO_TOKENS
        switching = parser.should_upgrade()
        method = parser.get_method()
        raw = (
            self._raw_head(method)
            if self._raw_start >= 0 and self._plain and not switching
            else None
        )
        head = RequestHead(
            method=method,
            target=self._url,
            # a raw head's request line ends in HTTP/1.1 (the getter formats a string)
            http11=raw is not None or parser.get_http_version() == "1.1",
            headers=self._headers,
            keep_alive=parser.should_keep_alive(),
            framing=self._framing,
            host=self._host,
            host_count=self._host_count,
            connection_tokens=tokens,
            transfer_encoding=self._te,
            switching=switching,
            upgrade=self._upgrade if switching else None,
            authorization=self._authorization,
            expect_continue=self._expect,
            size=self._head_size + 64,
            raw=raw,
        )
        self._trailers = []
        self._head_size = 0  # from here on it counts the trailers
        self._conn.push(head, head.size)

    def _raw_head(self, method: bytes) -> bytes | None:
        """The head's bytes as they came, if they say what `request_head` would have written
        of them: the request line `method url HTTP/1.1` CRLF, one line per parsed header
        (no obs-fold), every line ended by CRLF (no bare CR or LF), and no byte beyond the
        URL, names and values (counted in the head size) but one separator per header on
        average: llhttp parsed these bytes, so such a byte is whitespace around a value,
        which it would not count in the value either. Else None."""
        data = self._data
        start = self._raw_start
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            return None
        end += 4
        if end - start != len(method) + RAW_HEAD_EXTRA_BYTES + self._head_size:
            return None
        raw = data[start:end] if start or end != len(data) else data
        lines = len(self._headers) + 2
        if (
            not raw.startswith(b"%b %b HTTP/1.1\r\n" % (method, self._url))
            or raw.count(b"\r\n") != lines
            or raw.count(b"\n") != lines
            or raw.count(b"\r") != lines
        ):
            return None
        if self._framing is Framing.NONE and not self._te:
            self._raw_from = end  # a pipelined request right after this one begins there
        return raw

    def on_body(self, body: bytes) -> None:
        self._progress = True
        conn = self._conn
        if conn.body_bytes_left:
            conn.body_bytes_left = max(0, conn.body_bytes_left - len(body))
        conn.push(body, len(body))

    def on_chunk_header(self) -> None:
        self._progress = True

    def on_message_complete(self) -> None:
        self._progress = True
        self._in_message = False
        self._conn.body_bytes_left = 0
        self._last = not self._parser.should_keep_alive()
        trailers = self._trailers
        self._trailers = None
        if trailers:
            self._conn.push(EndOfMessage(trailers), self._head_size)
        else:
            self._conn.push(END_OF_MESSAGE, 0)
