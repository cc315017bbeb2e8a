"""Parse the app's responses (httptools/llhttp) and re-frame them for the visitor.

One `ResponseRelay` lives as long as its upstream stream, so a keep-alive stream reuses the
parser. Per request the driver calls `start()`, then `feed()` with each read and `feed_eof()` at
EOF, and writes `take()` to the visitor after each call.

Framing towards the visitor:
- Content-Length bodies pass through with their length;
- chunked and until-close bodies go out chunked to HTTP/1.1 visitors (so the visitor's
  connection survives an until-close response), and until-close to HTTP/1.0 visitors;
- HEAD, 1xx, 204 and 304 responses have no body. llhttp cannot be told that a response
  answers a HEAD, so the relay completes it at the end of the head and replaces the parser.

Pass-through: a final HTTP/1.1 response with a Content-Length and no hop-by-hop header but
`Connection: keep-alive`, whose head is whole in one read, is forwarded as the app wrote it
(less that line) when the request has no responseHeaders.set and the visitor speaks HTTP/1.1
(`rewrite.passthrough_head`). It is parsed by a second llhttp parser with no per-header
callbacks: the bytes are still checked, the head is not rebuilt.

Interim 1xx responses (100 Continue, 103) are forwarded to HTTP/1.1 visitors. A 101 answer to
an upgrade request ends HTTP on this stream: `upgraded` is set and the bytes after the head are
part of the output.
"""

from __future__ import annotations

from typing import Final

import httptools

from .rewrite import Framing, HeaderRules, chunk, last_chunk, passthrough_head, response_head

HEAD_OVERHEAD_BYTES: Final = 4


class BadResponse(Exception):
    """The app's response is malformed, too large, or cut short; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Stop(Exception):
    pass


class _PassThrough:
    """The callbacks of the parser for responses whose head passes through unchanged: no
    per-header or status callback, the relay already holds the head to forward."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_begin", "on_message_complete")

    def __init__(self, relay: ResponseRelay) -> None:
        self.on_message_begin = relay.on_message_begin
        self.on_headers_complete = relay.passthrough_headers_complete
        self.on_body = relay.on_body
        self.on_message_complete = relay.on_message_complete


class ResponseRelay:
    """Response-side state for one upstream stream. See the module docstring."""

    def __init__(self, max_head_bytes: int) -> None:
        self._max = max_head_bytes
        self._parser = httptools.HttpResponseParser(self)
        # Final HTTP/1.1 responses with a plain head (rewrite.passthrough_head) go to a second
        # parser without per-header callbacks; each message is parsed whole by one of the two.
        self._passthrough: httptools.HttpResponseParser | None = None
        self._current = self._parser  # the parser of the message in progress
        self._in_message = False
        self._passthrough_ok = False  # this request's response may pass its head through
        self._passthrough_head = b""
        self._stale = False  # the parser is mid-message (after HEAD) and must be replaced
        self._out: list[bytes] = []
        self._body: list[bytes] = []  # body pieces of this feed, framed together in _flush()
        self._rules: HeaderRules | None = None
        self._head_request = False
        self._client_http11 = True
        self._upgrade_requested = False
        self._error = ""
        self._in_head = False
        self._head_size = 0
        self._raw_in_head = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._framing = Framing.NONE  # upstream framing of the current message
        self._visitor_framing = Framing.NONE
        self._interim = False
        self.status = 0
        self.final_sent = False  # a final response head is in the output
        self.complete = False
        self.upgraded = False
        self.keep_visitor = True  # the visitor's connection can carry another request
        self.reusable = True  # the upstream stream can carry another request

    def start(
        self,
        *,
        rules: HeaderRules,
        head_request: bool,
        client_http11: bool,
        client_keep_alive: bool,
        upgrade_requested: bool,
    ) -> None:
        """Prepare for the response to one request."""
        if self._stale:
            self._parser = self._current = httptools.HttpResponseParser(self)
            self._stale = False
            self._in_message = False
        self._out = []
        self._body = []
        self._rules = rules
        self._head_request = head_request
        self._client_http11 = client_http11
        self._upgrade_requested = upgrade_requested
        self._in_head = False
        self.status = 0
        self.final_sent = False
        self.complete = False
        self.upgraded = False
        self.keep_visitor = client_keep_alive
        self.reusable = True
        # A head is passed through only where response_head would write the same bytes.
        self._passthrough_ok = (
            client_http11
            and client_keep_alive
            and not head_request
            and not upgrade_requested
            and not rules.response_set
            and not rules.response_set_names
        )

    def take(self) -> list[bytes]:
        """The bytes to write to the visitor since the last call."""
        self._flush()
        out, self._out = self._out, []
        return out

    def _flush(self) -> None:
        """Frame the body pieces gathered since the last flush (one chunk per read)."""
        body = self._body
        if not body:
            return
        self._body = []
        if self._visitor_framing is Framing.CHUNKED:
            self._out += chunk(body[0] if len(body) == 1 else b"".join(body))
        else:
            self._out += body

    def feed(self, data: bytes) -> None:
        """Parse bytes from the app. Raises BadResponse."""
        if self.complete:
            self.reusable = False  # the app sent bytes nobody asked for
            return
        if self._in_head:
            self._raw_in_head += len(data)
        parser = self._current
        if not self._in_message:  # a new response begins with this read: pick its parser
            head = passthrough_head(data, self._max) if self._passthrough_ok else None
            if head is None:
                parser = self._parser
            else:
                self._passthrough_head = head
                if self._passthrough is None:
                    self._passthrough = httptools.HttpResponseParser(_PassThrough(self))
                parser = self._passthrough
            self._current = parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self.upgraded:
                raise BadResponse("the app switched protocols without being asked") from None
            offset = int(exc.args[0])
            if offset < len(data):
                self._out.append(data[offset:])
            return
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Stop):
                if self.complete:  # bytes after the response: harmless now, but no reuse
                    self.reusable = False
                    return
                raise BadResponse(self._error) from None
            raise
        except httptools.HttpParserError as exc:
            if self.upgraded:
                # llhttp pauses after any 101, but httptools gives the offset only when the
                # response also says `Connection: upgrade`; find the end of the head instead.
                end = data.find(b"\r\n\r\n")
                if 0 <= end < len(data) - 4:
                    self._out.append(data[end + 4 :])
                return
            if self.complete:
                self.reusable = False
                return
            raise BadResponse(f"malformed response from the app: {exc}") from None
        if self._in_head and self._raw_in_head > self._max:
            raise BadResponse("the app's response headers are too large")

    def feed_eof(self) -> None:
        """The app closed its side. Raises BadResponse if the response is incomplete."""
        self.reusable = False
        if self.complete:
            return
        if self.final_sent and self._framing is Framing.UNTIL_CLOSE:
            if self._visitor_framing is Framing.CHUNKED:
                self._flush()
                self._out.append(last_chunk([]))
            self.complete = True
            return
        if self.final_sent:
            raise BadResponse("the app closed the connection in the middle of the response")
        raise BadResponse("the app closed the connection without answering")

    # --- httptools callbacks -------------------------------------------------------------

    def _stop(self, reason: str) -> None:
        self._error = reason
        raise _Stop

    def on_message_begin(self) -> None:
        if self.complete:
            self.reusable = False
            self._stop("the app sent a second response")
        self._in_head = True
        self._in_message = True
        self._raw_in_head = 0
        self._head_size = 0
        self._reason = b""
        self._headers = []
        self._trailers = None
        self._interim = False

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._grow(len(status))

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self._max:
            self._stop("the app's response headers are too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + HEAD_OVERHEAD_BYTES)
        if self._trailers is not None:
            self._trailers.append((name, value))
        else:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._trailers = []
        parser = self._parser
        status = self.status = parser.get_status_code()
        headers = self._headers
        if status == 101:
            self._switch(headers)
            return
        if status < 200:
            self._interim = True
            if self._client_http11:
                self._out.append(
                    response_head(
                        status=status,
                        reason=self._reason,
                        headers=headers,
                        rules=None,
                        framing=Framing.NONE,
                        transfer_encoding=b"",
                        connection=None,
                        upgrade=None,
                    )
                )
            return
        te = b""
        has_length = False
        for name, value in headers:
            n = len(name)
            if n == 17 and name.lower() == b"transfer-encoding":
                te = value if not te else te + b", " + value
            elif n == 14 and name.lower() == b"content-length":
                has_length = True
        if self._head_request or status == 204 or status == 304:
            framing = Framing.NONE
        elif te:
            chunked = te.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            framing = Framing.CHUNKED if chunked else Framing.UNTIL_CLOSE
        elif has_length:
            framing = Framing.LENGTH
        else:
            framing = Framing.UNTIL_CLOSE
        self._framing = framing
        visitor = framing
        visitor_te = b""
        if framing is Framing.CHUNKED or framing is Framing.UNTIL_CLOSE:
            if self._client_http11:
                visitor = Framing.CHUNKED
                visitor_te = te if framing is Framing.CHUNKED else b"chunked"
            else:
                visitor = Framing.UNTIL_CLOSE
        self._visitor_framing = visitor
        if visitor is Framing.UNTIL_CLOSE:
            self.keep_visitor = False
        if not self.keep_visitor:
            connection: bytes | None = b"close"
        elif not self._client_http11:
            connection = b"keep-alive"
        else:
            connection = None
        self._out.append(
            response_head(
                status=status,
                reason=self._reason,
                headers=headers,
                rules=self._rules,
                framing=visitor,
                transfer_encoding=visitor_te,
                connection=connection,
                upgrade=None,
            )
        )
        self.final_sent = True
        if self._head_request:
            # llhttp would wait for the body a HEAD response announces but never sends.
            self.complete = True
            self.reusable = parser.should_keep_alive()
            self._stale = True

    def passthrough_headers_complete(self) -> None:
        """The head `passthrough_head` accepted is parsed: forward it as it came."""
        self._in_head = False
        self._trailers = []
        self.status = self._current.get_status_code()
        self._framing = self._visitor_framing = Framing.LENGTH
        self._out.append(self._passthrough_head)
        self._passthrough_head = b""
        self.final_sent = True

    def _switch(self, headers: list[tuple[bytes, bytes]]) -> None:
        if not self._upgrade_requested:
            self._stop("the app answered 101 to a request that did not ask to upgrade")
        upgrade = b""
        for name, value in headers:
            if len(name) == 7 and name.lower() == b"upgrade":
                upgrade = value
        self._out.append(
            response_head(
                status=101,
                reason=self._reason,
                headers=headers,
                rules=None,
                framing=Framing.NONE,
                transfer_encoding=b"",
                connection=None,
                upgrade=upgrade,
            )
        )
        self.final_sent = True
        self.upgraded = True
        self.complete = True
        self.keep_visitor = False
        self.reusable = False

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.reusable = False
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._interim:
            self._interim = False
            return
        if self.complete:
            return
        if self._visitor_framing is Framing.CHUNKED:
            self._flush()
            self._out.append(last_chunk(self._trailers or []))
        self.complete = True
        self.reusable = self._current.should_keep_alive()
