"""The upstream of an http proxy whose client is offline: a fallback answer, and capture.

`OfflineByteStream` stands where the mux stream to the client would be. The vhost writes the
request into it as it would to the client (head already rewritten, body re-framed); this
stream parses it with httptools and, once the request is complete, hands its bytes to
`store` (when the proxy asked for capture) and answers with the proxy's fallback response.
A request that cannot be stored (over the byte limit, or the store is full) is answered
`503` with `Retry-After`, so a webhook provider retries later instead of counting it as
delivered. Keep-alive works: each complete request gets its own answer.

Bounds: one request's bytes up to `max_request_bytes` (more: 503, the rest is discarded);
answers waiting to be read, at most `MAX_QUEUED_ANSWERS` (the vhost reads each before it
writes the next request).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import httptools

logger = logging.getLogger(__name__)

MAX_QUEUED_ANSWERS: Final = 8
RETRY_AFTER_S: Final = 60  # what a 503 tells the visitor
OFFLINE_HEADER: Final = "X-Tunnelkit-Offline"  # on every offline answer: stored / not-stored

# Stores one complete request; returns whether it was kept.
StoreRequest = Callable[[bytes], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class OfflinePolicy:
    """What tunneld does for one http proxy while its client is offline."""

    status: int  # the fallback answer's status
    body: str
    capture: bool  # store requests for delivery on reconnect


def answer(status: int, body: str, note: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response."""
    data = body.encode("utf-8")
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Offline"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        f"{OFFLINE_HEADER}: {note}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


class _Parser:
    """httptools callbacks: only the end of each message matters here."""

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


class OfflineByteStream:
    """A `ByteStream` that answers from the proxy's offline policy (see the module doc)."""

    def __init__(
        self, policy: OfflinePolicy, store: StoreRequest | None, max_request_bytes: int
    ) -> None:
        self._policy = policy
        self._store = store if policy.capture else None
        self._max = max_request_bytes
        self._events = _Parser()
        self._parser = httptools.HttpRequestParser(self._events)
        self._current = bytearray()
        self._too_big = False
        self._answers: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._eof_in = False
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("the offline stream is closed")
        before = self._events.complete
        if len(self._current) + len(data) > self._max:
            self._too_big = True
        else:
            self._current += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade request is answered like any other (no upgrade happens)
        except httptools.HttpParserError:
            self.abort()
            raise ConnectionResetError("not an HTTP request") from None
        if self._events.complete > before:
            await self._finish_request()

    async def _finish_request(self) -> None:
        policy = self._policy
        request, too_big = bytes(self._current), self._too_big
        self._current.clear()
        self._too_big = False
        if self._store is None:
            reply = answer(policy.status, policy.body, "not-stored")
        elif too_big:
            reply = answer(
                503,
                f"request larger than {self._max} bytes; the app is offline, retry later\n",
                "not-stored",
                (("Retry-After", str(RETRY_AFTER_S)),),
            )
        elif await self._store(request):
            reply = answer(policy.status, policy.body, "stored")
        else:
            reply = answer(
                503,
                "the app is offline and the offline store is full; retry later\n",
                "not-stored",
                (("Retry-After", str(RETRY_AFTER_S)),),
            )
        if len(self._answers) >= MAX_QUEUED_ANSWERS:
            self.abort()  # a visitor pipelining without reading: cut it off
            raise ConnectionResetError("too many pipelined requests")
        self._answers.append(reply)
        self._readable.set()

    async def read(self, max_bytes: int) -> bytes:
        while not self._answers:
            if self._closed or self._eof_in:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._answers[0]
        if len(chunk) <= max_bytes:
            self._answers.popleft()
            return chunk
        self._answers[0] = chunk[max_bytes:]
        return chunk[:max_bytes]

    def write_eof(self) -> None:
        self._eof_in = True
        self._readable.set()

    def abort(self) -> None:
        self._closed = True
        self._answers.clear()
        self._readable.set()

    def close(self) -> None:
        self.abort()

    def at_eof(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        return None
