"""One direction of a captured HTTP connection: llhttp fed exact pieces, heads kept raw.

See capture.py's theory of operation; this module is the cutting, that one the matching of
requests to responses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import httptools

from tunnel_client.inspect.exchange import CapturedBody

MAX_HEAD_BYTES: Final = 64 * 1024  # request/status line plus headers, per message
MAX_HEADERS: Final = 256  # per message
MAX_PENDING_EXCHANGES: Final = 64  # pipelined requests waiting for their responses
# Pieces of a head in progress kept apart before they are joined: a head sent a byte or two
# per read would otherwise cost a list slot and an object per piece (about 20x its bytes).
MAX_HEAD_PARTS: Final = 64
MAX_BODY_PARTS: Final = 64  # the same for a kept body's chunks (then one growing buffer)
MAX_BAD_METHOD_CHARS: Final = 16  # of a refused request head's first word, for the list
_HEAD_END: Final = b"\r\n\r\n"


class CaptureStopped(Exception):
    """Raised by a side or the capture's hooks (never inside a parser callback) to stop
    capturing; the message says why."""


class BadHead(Exception):
    """The parser refused a message head; `head` holds its raw bytes, to show them."""

    def __init__(self, head: bytes, reason: str) -> None:
        super().__init__(reason)
        self.head = head


class _Collector:
    """The only httptools callbacks: no per-header, URL or status callback, so llhttp parses
    and checks the head in C; the head itself is kept raw (`MessageSide`). Bodies are kept as the
    parser's own chunks, joined once (not at all when there is one)."""

    __slots__ = (
        "_body",
        "_body_kept",
        "_joined",
        "_max_body_bytes",
        "body_size",
        "complete",
        "head_done",
    )

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body_bytes = max_body_bytes
        self.head_done = False
        self.complete = False
        self._body: list[bytes] = []  # kept chunks, at most max_body_bytes in all
        self._joined: bytearray | None = None  # the kept bytes, once there were many chunks
        self._body_kept = 0
        self.body_size = 0

    def reset(self) -> None:
        self.head_done = False
        self.complete = False
        self._body = []
        self._joined = None
        self._body_kept = 0
        self.body_size = 0

    def captured_body(self) -> CapturedBody:
        body = self._body
        if self._joined is not None:
            data = bytes(self._joined)
        else:
            data = body[0] if len(body) == 1 else b"".join(body)  # one chunk: no copy
        return CapturedBody(data, self.body_size, self.body_size > len(data))

    # httptools callbacks (names fixed by httptools)

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        room = self._max_body_bytes - self._body_kept
        if room > 0:
            if len(body) > room:
                body = body[:room]
            self._body_kept += len(body)
            joined = self._joined
            if joined is not None:
                joined += body
                return
            self._body.append(body)
            if len(self._body) > MAX_BODY_PARTS:  # tiny chunks: one buffer, not an object each
                self._joined = bytearray(b"".join(self._body))
                self._body = []

    def on_message_complete(self) -> None:
        self.complete = True


# What a `MessageSide` is feeding its parser: a head, a body of known length, a chunked body, or a
# body that runs to the end of the connection.
_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_TO_EOF: Final = 3
_CRLF_BYTES: Final = (10, 13)
# Responses without a body whatever their Content-Length (the status at offset 9 of
# "HTTP/1.1 nnn"): 1xx, 204 and 304 go the piecewise way.
_NO_BODY_STATUS: Final = (b"204", b"304")
# A refused head that starts like HTTP is kept, raw, as an exchange that says why; anything
# else (TLS, SSH, binary) just stops the capture.
_REQUEST_LINE: Final = re.compile(rb"[!-~]+ [!-~]+ HTTP/[0-9]")
_STATUS_LINE: Final = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}")


def _framing(head: bytes) -> tuple[int | None, bool]:
    """(Content-Length, chunked) read from a raw head. Only used to cut the parser's input at
    the message's end; the parser stays the judge (a disagreement stops the capture)."""
    low = head.lower()
    length: int | None = None
    found = low.find(b"\r\ncontent-length:")
    if found >= 0:
        value = low[found + 17 : low.find(b"\r\n", found + 17)].strip()
        length = int(value) if value.isdigit() else None
    found = low.find(b"\r\ntransfer-encoding:")
    chunked = found >= 0 and b"chunked" in low[found + 20 : low.find(b"\r\n", found + 20)]
    return length, chunked


def _end_of(tail: bytes, data: bytes, pos: int, limit: int) -> int:
    """The offset in `data` just past the next CRLF CRLF at or after `pos` (before `limit`),
    counting one that began in `tail` (the previous bytes' last three), or -1."""
    if tail:
        found = (tail + data[pos : pos + 3]).find(_HEAD_END)
        if found >= 0:
            return pos + found + len(_HEAD_END) - len(tail)
    found = data.find(_HEAD_END, pos, limit)
    return -1 if found < 0 else found + len(_HEAD_END)


class MessageSide:
    """One direction's parser, fed whole messages' pieces so that each head is kept raw.

    llhttp (httptools) is strict: a head ends at its first CRLF CRLF. So the parser is fed a
    head exactly, then the body up to the message's end (Content-Length bytes, or up to a
    CRLF CRLF at a time for a chunked body, whose end always follows one), and every message
    starts a fresh cut: the next head is never inside a feed that began in a body.
    """

    def __init__(
        self,
        request: bool,
        max_body_bytes: int,
        on_begin: Callable[[], None],
        on_head: Callable[[bytes], bool],
        on_complete: Callable[[], None],
    ) -> None:
        self._request = request
        self.collector = _Collector(max_body_bytes)
        self.parser = self._new_parser()
        self._on_begin = on_begin
        self._on_head = on_head  # returns True when no body follows (a HEAD's response)
        self._on_complete = on_complete
        self.state = _HEAD
        self._parts: list[bytes] = []  # a head in progress, split across feeds
        self._size = 0  # bytes in _parts
        self._tail = b""  # the last bytes fed in this state, to find a split CRLF CRLF
        self._lines = 0  # CRLFs in _parts
        self._left = 0  # Content-Length bytes still to come
        self.fast_bodies = True  # False while a HEAD's response may come (set by the capture)

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        if self._request:
            return httptools.HttpRequestParser(self.collector)
        return httptools.HttpResponseParser(self.collector)

    @property
    def in_message(self) -> bool:
        return self.state != _HEAD or bool(self._parts)

    @property
    def framed(self) -> bool:
        """A body with a length or chunks is in progress (so a close cuts it short)."""
        return self.state in (_LENGTH, _CHUNKED)

    def restart(self) -> None:
        """Start over with a fresh parser at a message boundary."""
        self.collector.reset()
        self.parser = self._new_parser()
        self._next()

    def _next(self) -> None:
        self.state = _HEAD
        self._tail = b""

    def feed(self, data: bytes) -> None:
        if self.state == _HEAD and not self._parts and self._feed_whole(data):
            return
        pos, size = 0, len(data)
        while pos < size:
            state = self.state
            if state == _HEAD:
                pos = self._feed_head(data, pos)
            elif state == _LENGTH:
                step = min(size - pos, self._left)
                self._feed_body(data, pos, pos + step)
                pos += step
                self._left -= step
                if self._left == 0 or self.collector.complete:
                    self._body_done(self._left == 0)
            elif state == _CHUNKED:
                end = _end_of(self._tail, data, pos, size)
                stop = size if end < 0 else end
                self._feed_body(data, pos, stop)
                self._tail = (self._tail + data[max(pos, stop - 3) : stop])[-3:]
                pos = stop
                if self.collector.complete:
                    self._body_done(True)
            else:
                self._feed_body(data, pos, size)
                pos = size

    def _feed_whole(self, data: bytes) -> bool:
        """The common case in one parser call: `data` is exactly one message, a head alone
        or a head and its whole Content-Length body. False, with nothing fed, otherwise."""
        end = data.find(_HEAD_END, 0, MAX_HEAD_BYTES + len(_HEAD_END))
        if end < 0 or data[0] in _CRLF_BYTES:
            return False
        end += len(_HEAD_END)
        size = len(data)
        length: int | None = 0
        if end == size:
            head = data  # a body, if any, comes in later feeds
        else:
            if not self.fast_bodies:  # a HEAD's response: its length is not its body's
                return False
            head = data[:end]
            length, chunked = _framing(head)
            if chunked or length != size - end:
                return False
            if not self._request and (head[9:10] == b"1" or head[9:12] in _NO_BODY_STATUS):
                return False
        if head.count(b"\r\n") > MAX_HEADERS + 2:
            return False  # the piecewise path says why
        self._on_begin()
        self._parts = [head]
        collector = self.collector
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._head_done()
            raise
        except httptools.HttpParserError as exc:
            raise self._refused(head, exc) from None
        if end != size and (not collector.complete or collector.body_size != length):
            raise CaptureStopped("the parser and the message's framing disagree")
        self._head_done()  # the whole message, or its head and the framing for the next feeds
        return True

    def _refused(self, head: bytes, exc: httptools.HttpParserError) -> Exception:
        """What to raise when the parser refuses `head`: a head that starts like HTTP is
        kept (`BadHead`); anything else (TLS, SSH, binary) just stops the capture."""
        reason = f"{type(exc).__name__}: {exc}"
        if (_REQUEST_LINE if self._request else _STATUS_LINE).match(head):
            return BadHead(head, reason)
        return CaptureStopped(f"not parseable as HTTP/1.x ({reason})")

    def _feed_body(self, data: bytes, start: int, stop: int) -> None:
        self.parser.feed_data(data if start == 0 and stop == len(data) else data[start:stop])

    def _body_done(self, expected: bool) -> None:
        if not (expected and self.collector.complete):
            raise CaptureStopped("the parser and the message's framing disagree")
        self._on_complete()
        self.collector.reset()
        self._next()

    def _feed_head(self, data: bytes, pos: int) -> int:
        """Feed head bytes from `pos` (the parser sees them as they come, so garbage stops
        capture at once); at the head's end, hand the whole raw head on."""
        size = len(data)
        if not self._parts:
            while pos < size and data[pos] in _CRLF_BYTES:
                pos += 1  # blank lines between messages (llhttp skips them too)
            if pos == size:
                return pos
            self._on_begin()
        room = MAX_HEAD_BYTES - self._size
        end = _end_of(self._tail, data, pos, pos + room + len(_HEAD_END))
        if end < 0 and size - pos > room:
            raise CaptureStopped(f"a message head is larger than {MAX_HEAD_BYTES} bytes")
        stop = size if end < 0 else end
        piece = data if pos == 0 and stop == size else data[pos:stop]
        parts = self._parts
        parts.append(piece)
        if len(parts) > MAX_HEAD_PARTS:  # a head trickled in tiny pieces: one object, not many
            self._parts = [b"".join(parts)]
        self._size += len(piece)
        self._lines += piece.count(b"\r\n")
        if self._lines > MAX_HEADERS + 2:  # the start line and the blank line
            raise CaptureStopped(f"a message has more than {MAX_HEADERS} headers")
        collector = self.collector
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._head_done()  # the head is whole: record it, then stop
            raise
        except httptools.HttpParserError as exc:
            raise self._refused(b"".join(self._parts), exc) from None
        if end < 0:
            self._tail = (self._tail + piece[-3:])[-3:]
            return size
        if not collector.head_done:
            raise CaptureStopped("the head did not end where the parser expected")
        self._head_done()
        return end

    def _head_done(self) -> None:
        parts = self._parts
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._size = 0
        self._lines = 0
        self._tail = b""
        collector = self.collector
        if self._on_head(head):
            self.restart()
        elif collector.complete:
            self._on_complete()
            collector.reset()
        else:
            length, chunked = _framing(head)
            if chunked:
                self.state = _CHUNKED
            elif length:
                self.state = _LENGTH
                self._left = length
            elif length == 0:
                raise CaptureStopped("the parser and the message's framing disagree")
            else:
                self.state = _TO_EOF
