"""One request/response exchange between a visitor connection and an upstream stream.

The driver (`http_proxy.py`) has parsed and routed the request head and built the upstream
head. `run_exchange` then:
1. writes the head plus whatever body is already queued, in one write;
2. if the body is not all there, starts a pump task that forwards the rest (re-framed);
3. reads the app's responses through the `ResponseRelay` and writes them to the visitor;
4. after a 101, splices raw bytes until both sides end.

Deadlines (`timeout_s`, frp's vhostHTTPTimeout):
- the final response head must arrive within timeout_s after the request is fully sent
  (504 otherwise); while the body is still uploading there is no head deadline;
- after the head, each read from the app must come within timeout_s (like nginx's
  proxy_read_timeout), and each wait for the visitor to take our output likewise;
- the pump waits at most timeout_s for each piece of the visitor's body.

Failures before the response head is written get an error page; after it, the visitor's
connection is reset, since the response cannot be completed.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import Final, cast

from protocol.aio.stream import StreamResetError
from protocol.errors import ErrorCode

from .inbound import InboundProtocol
from .pages import error_response
from .request import EndOfMessage, ParseFailure
from .response import BadResponse, ResponseRelay
from .rewrite import Framing, chunk, last_chunk
from .routing import HTTPRoute
from .splice import SpliceCounters, splice
from .upstream import ByteStream, CallbackStream, close_stream

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 256 * 1024  # per read from the app
BODY_COALESCE_BYTES: Final = 256 * 1024  # queued body pieces are joined up to this per write
PUMP_GRACE_S: Final = 1.0  # after the response, how long an unfinished body pump may finish
# Requests that a reused stream found dead may send again on a new one (when sent whole).
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Outcome(Enum):
    KEEP = "keep"  # the visitor's connection can carry another request
    CLOSE = "close"  # close the visitor's connection after flushing
    RETRY = "retry"  # the reused stream was dead before answering; nothing went to the visitor


class _PumpFailed(Exception):
    """The visitor's body did not arrive: timeout, EOF, loss or a framing error."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class Upstream:
    """The stream a visitor connection holds to one route, and its response parser."""

    __slots__ = ("lane", "relay", "requests", "route", "stream")

    def __init__(self, route: HTTPRoute, stream: ByteStream, max_head_bytes: int) -> None:
        self.route = route
        self.stream = stream
        self.relay = ResponseRelay(max_head_bytes)
        self.requests = 0
        # The stream can call back instead of being awaited (a MuxStream): lane.py serves
        # the connection's next keep-alive requests on it from callbacks.
        self.lane: CallbackStream | None = (
            cast(CallbackStream, stream) if hasattr(stream, "set_rx_notify") else None
        )

    def ended(self) -> bool:
        """True if the stream cannot carry another request: the app ended it, or (a stream
        that calls back) sent bytes nobody asked for, e.g. a second response, which would be
        relayed as the answer to the next request. Such a stream is reset, never reused."""
        stream = self.stream
        if stream.at_eof():
            return True
        lane = self.lane
        if lane is None:
            return False
        try:
            data = lane.read_nowait(1)
        except ConnectionError:
            data = b""
        if data is None:
            return False
        stream.abort()
        return True

    async def close(self) -> None:
        """Close the stream cleanly, bounded by CLOSE_TIMEOUT_S."""
        await close_stream(self.stream)


class Exchange:
    """State for one request. Create, then `await run()`."""

    def __init__(
        self,
        conn: InboundProtocol,
        upstream: Upstream,
        *,
        host: str,
        framing: Framing,
        head_request: bool,
        timeout_s: float,
    ) -> None:
        self.conn = conn
        self.upstream = upstream
        self.host = host
        self.framing = framing
        self.head_request = head_request
        self.timeout_s = timeout_s
        self.bytes_to_app = 0
        self.clean = False  # the app's side ended in a clean state: close it, don't reset
        self.got_bytes = False  # a response byte came back (no retry after that)
        self.outcome: Outcome | None = None  # decided already (by the lane, on a failure)
        self._timer: asyncio.Timeout | None = None

    async def run(self, first_write: bytes, complete: bool, *, retryable: bool) -> Outcome:
        """Send the request, relay the response. See the module docstring."""
        stream = self.upstream.stream
        try:
            await stream.write(first_write)
        except (ConnectionError, OSError) as exc:
            # Expected when a reused stream died while idle (the app closed its keep-alive).
            logger.debug("upstream write failed: %r", exc)
            if retryable:
                return Outcome.RETRY
            self._error_page(502, "the connection to the app broke while sending the request")
            return Outcome.CLOSE
        self.bytes_to_app += len(first_write)
        pump: asyncio.Task[None] | None = None
        if not complete:
            pump = self.conn.loop.create_task(self._pump())
            pump.add_done_callback(self._pump_done)
        try:
            outcome = await self._relay(pump, retryable=retryable and complete)
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                await asyncio.wait({pump})
        pump_ok = pump is None or outcome_pump_ok(pump)
        self.clean = self.upstream.relay.complete and pump_ok
        return outcome if pump_ok else Outcome.CLOSE

    async def resume(self, deadline: float, *, retryable: bool) -> Outcome:
        """Go on with an exchange that the lane (lane.py) sent and began to relay: the same
        steps as `run` after the request is sent, with the lane's response deadline."""
        outcome = self.outcome
        if outcome is None:
            outcome = await self._relay(None, retryable=retryable, deadline=deadline)
        self.clean = self.upstream.relay.complete
        return outcome

    def bad_response(self, exc: BadResponse) -> None:
        """The app's response is malformed: reset its stream and answer (or reset) the visitor."""
        self.upstream.stream.abort()
        self._failed(exc.reason, None)

    def _pump_done(self, pump: asyncio.Task[None]) -> None:
        if pump.cancelled():
            return
        if pump.exception() is not None:
            # Stop the relay: the request cannot be completed.
            self.upstream.stream.abort()
            return
        timer = self._timer
        if timer is not None and not timer.expired() and not self.upstream.relay.final_sent:
            # The request is fully sent: now the app has timeout_s to answer.
            timer.reschedule(self.conn.loop.time() + self.timeout_s)

    async def _pump(self) -> None:
        conn = self.conn
        stream = self.upstream.stream
        loop = self.conn.loop
        chunked = self.framing is Framing.CHUNKED
        while True:
            item = conn.pop()
            if item is None:
                if not await conn.wait(loop.time() + self.timeout_s):
                    raise _PumpFailed("the request body stalled", 408)
                continue
            if isinstance(item, bytes):
                parts = chunk(item) if chunked else [item]
                size = len(item)
                while size < BODY_COALESCE_BYTES and isinstance(conn.peek(), bytes):
                    more = conn.pop()
                    assert isinstance(more, bytes)
                    size += len(more)
                    if chunked:
                        parts += chunk(more)
                    else:
                        parts.append(more)
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                await stream.write(data)
                self.bytes_to_app += len(data)
            elif isinstance(item, EndOfMessage):
                if chunked:
                    data = last_chunk(item.trailers)
                    await stream.write(data)
                    self.bytes_to_app += len(data)
                return
            elif isinstance(item, ParseFailure):
                raise _PumpFailed(item.detail, item.status)
            else:  # EOF or LOST in the middle of the body
                raise _PumpFailed("the visitor went away during the request body")

    async def _relay(
        self,
        pump: asyncio.Task[None] | None,
        *,
        retryable: bool,
        deadline: float | None = None,
    ) -> Outcome:
        conn = self.conn
        relay = self.upstream.relay
        stream = self.upstream.stream
        loop = self.conn.loop
        got_bytes = self.got_bytes
        reset_reason = ""
        if deadline is None and pump is None:
            deadline = loop.time() + self.timeout_s
        try:
            if deadline is not None and deadline <= loop.time() and not relay.complete:
                raise TimeoutError  # the lane's deadline passed (timeout_at would cancel late)
            async with asyncio.timeout_at(deadline) as timer:
                self._timer = timer
                if conn.writing_paused:  # the lane wrote to a visitor who is not reading
                    await conn.drain()
                while not relay.complete:
                    try:
                        data = await stream.read(READ_CHUNK_BYTES)
                    except StreamResetError as exc:
                        if exc.code == ErrorCode.ACCEPT_TIMEOUT and not relay.final_sent:
                            # The client never took the stream (userConnTimeout): a gateway
                            # timeout, and no retry, which would only wait as long again.
                            self._error_page(504, exc.reason)
                            return Outcome.CLOSE
                        logger.debug("upstream reset: %r", exc)
                        if exc.code == ErrorCode.DIAL_FAILED:
                            # The client names the local failure: "connection refused to ..."
                            reset_reason = exc.reason
                        data = None
                    except (ConnectionError, OSError) as exc:
                        # The app (or the tunnel) reset the stream.
                        logger.debug("upstream read failed: %r", exc)
                        data = None
                    if conn.lost:
                        stream.abort()
                        return Outcome.CLOSE
                    if not data:
                        if retryable and not got_bytes:
                            return Outcome.RETRY
                        if data is None:
                            self._failed(
                                f"the tunnel client could not reach the app: {reset_reason}"
                                if reset_reason
                                else "the connection to the app was reset",
                                pump,
                            )
                            return Outcome.CLOSE
                        relay.feed_eof()
                    else:
                        got_bytes = True
                        relay.feed(data)
                    out = relay.take()
                    if out:
                        conn.writelines(out)
                    if relay.final_sent and not relay.complete:
                        timer.reschedule(loop.time() + self.timeout_s)
                    if conn.writing_paused:
                        await conn.drain()
        except TimeoutError:
            if relay.final_sent:
                logger.debug("app stalled mid-response; resetting the visitor")
                stream.abort()
                conn.abort()
            elif pump is not None and pump.done() and not outcome_pump_ok(pump):
                self._failed("", pump)
            else:
                stream.abort()
                self._error_page(504, f"no response within {self.timeout_s:g} seconds")
            return Outcome.CLOSE
        except BadResponse as exc:
            stream.abort()
            self._failed(exc.reason, pump)
            return Outcome.CLOSE
        finally:
            self._timer = None
        if relay.upgraded:
            counters = SpliceCounters()
            await splice(conn, stream, counters)
            self.bytes_to_app += counters.to_app
            return Outcome.CLOSE
        if pump is not None and not pump.done():
            # The app answered before the whole body was sent (e.g. 413, 401): give the pump
            # a moment in case it is only finishing, else the connection cannot be reused.
            await asyncio.wait({pump}, timeout=PUMP_GRACE_S)
            if not pump.done():
                relay.reusable = False
                relay.keep_visitor = False
        return Outcome.KEEP if relay.keep_visitor else Outcome.CLOSE

    def _failed(self, reason: str, pump: asyncio.Task[None] | None) -> None:
        """Answer a failure that happened before or during the response."""
        relay = self.upstream.relay
        if relay.final_sent:
            self.conn.abort()
            return
        exc = None
        if pump is not None and pump.done() and not pump.cancelled():
            exc = pump.exception()
        if isinstance(exc, _PumpFailed):
            if exc.status is not None and not self.conn.lost:
                self._error_page(exc.status, str(exc))
            else:
                self.conn.abort()
            return
        self._error_page(502, reason)

    def _error_page(self, status: int, detail: str) -> None:
        self.conn.write(
            error_response(
                status,
                self.host,
                detail,
                keep_alive=False,
                head_only=self.head_request,
                note=self.upstream.route.offline_note if status == 502 else None,
            )
        )


def take_ready_body(conn: InboundProtocol, framing: Framing) -> tuple[list[bytes], bool]:
    """Pop the body pieces already queued, framed for the app; True if the body ended."""
    parts: list[bytes] = []
    chunked = framing is Framing.CHUNKED
    while True:
        item = conn.peek()
        if isinstance(item, bytes):
            conn.pop()
            if chunked:
                parts += chunk(item)
            else:
                parts.append(item)
        elif isinstance(item, EndOfMessage):
            conn.pop()
            if chunked:
                parts.append(last_chunk(item.trailers))
            return parts, True
        else:
            return parts, False


def outcome_pump_ok(pump: asyncio.Task[None]) -> bool:
    """True if the pump finished and forwarded the whole body."""
    return pump.done() and not pump.cancelled() and pump.exception() is None
