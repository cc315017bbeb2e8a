"""The lane: a visitor connection's keep-alive requests served from callbacks.

After a request on a stream that can call back (a MuxStream: `Upstream.lane`), the serving
coroutine (http_proxy.py) hands the connection to a `Lane` and sleeps until the lane gives it
back. The lane then serves each simple request in the callbacks that bring its bytes, with no
task wake-up, future or timer per request:

    visitor bytes -> RequestReader (the connection's feeder) -> the queued head
      -> check, route, authorize, rebuild (`HTTPVhostServer.prepare`)
      -> `send` the head on the held stream
    app bytes -> the stream's rx callback -> `read_nowait` -> ResponseRelay -> the visitor
      -> stats and access record -> the next queued (pipelined) request, if any

Everything else goes back to the coroutine (a `Handoff`), which does what it always did:
- before a request is sent: a body (a framed request), an upgrade or CONNECT, a partial head
  (the slow-header deadline), a request for another route, a held stream that ended, EOF,
  a parse failure, an answer that closes the connection, the listener closing;
- after it is sent (`Handoff.sent`, the coroutine resumes the exchange where the lane
  stopped): the app's end or reset before the response is whole (a retry or a 502/504 page),
  a visitor that stops reading (the coroutine drains), a response that ends the stream or
  the visitor's connection, the deadline.

Deadlines: one per connection, `deadline`, and one timer. Sending a request sets it to
`timeout_s` ahead; after the final response head, each read from the app moves it
`timeout_s` ahead (as the coroutine's `asyncio.timeout_at` would); a finished response sets
it `idle_timeout_s` ahead. The timer is re-armed only when it fires before the deadline, so
moving the deadline costs a store. When it passes, the coroutine gets the connection with the
deadline, and answers exactly as it would have (504, a reset, or a quiet close).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, NamedTuple

from .exchange import IDEMPOTENT_METHODS, READ_CHUNK_BYTES, Exchange, Outcome, Upstream
from .request import RequestHead, RequestReader
from .response import BadResponse
from .rewrite import Framing

if TYPE_CHECKING:
    from .http_proxy import HTTPVhostServer
    from .inbound import InboundProtocol
    from .routing import HTTPRoute
    from .upstream import CallbackStream


class Prepared(NamedTuple):
    """A routed request, ready for the app."""

    route: HTTPRoute
    host: str
    first_write: bytes  # the rebuilt head and whatever body was queued
    complete: bool  # the whole body is in first_write


class Sent(NamedTuple):
    """A request the lane sent on the held stream, for the coroutine to finish."""

    exchange: Exchange
    retryable: bool
    bytes_before: int  # the visitor connection's bytes_sent before the response
    started: float  # time.monotonic() at the request
    deadline: float  # the response deadline when the lane stopped


class Handoff(NamedTuple):
    """Why the lane gave the connection back, and what the coroutine goes on with."""

    deadline: float  # the connection's deadline (for the next head when nothing is pending)
    head: RequestHead | None = None  # a request taken from the queue, to forward ...
    request: Prepared | None = None  # ... routed (and maybe `sent` already)
    sent: Sent | None = None
    outcome: Outcome | None = None  # the lane answered the request itself (a page)


class Lane:
    """Serve one connection's requests from callbacks until `run` returns. See the module."""

    def __init__(
        self,
        server: HTTPVhostServer,
        conn: InboundProtocol,
        reader: RequestReader,
        up: Upstream,
    ) -> None:
        assert up.lane is not None
        self._server = server
        self._conn = conn
        self._reader = reader
        self._up = up
        self._stream: CallbackStream = up.lane
        self._loop = conn.loop
        self._feed = self.feed  # the bound method, made once
        self._feeding = False
        self._done: asyncio.Future[Handoff] | None = None
        self._result: Handoff | None = None
        self.deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # the request in flight
        self._head: RequestHead | None = None
        self._request: Prepared | None = None
        self._exchange: Exchange | None = None
        self._retryable = False
        self._bytes_before = 0
        self._started = 0.0

    async def run(self, deadline: float) -> Handoff:
        """Serve until the coroutine is needed; `deadline` is for the next request head."""
        conn = self._conn
        conn.feeder = self._feed
        conn.on_notify = self._pump
        self._stream.set_rx_notify(self._on_upstream)
        self._arm(deadline)
        try:
            self._pump()
            if self._result is None:
                self._done = self._loop.create_future()
                return await self._done
            return self._result
        finally:
            self._stop()

    # --- the visitor's side --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """The connection's feeder while the lane runs: parse, then serve what was queued."""
        self._feeding = True
        conn = self._conn
        # The reader's pushes would each call `_pump`, which returns at once while feeding:
        # no notify callback until the read is parsed, then one pump.
        conn.on_notify = None
        try:
            self._reader.feed(data)
        finally:
            self._feeding = False
            if self._result is None:
                conn.on_notify = self._pump
        self._pump()

    def _pump(self) -> None:
        """Serve the queued requests while none is in flight (also the connection's notify)."""
        if self._feeding or self._result is not None:
            return
        conn = self._conn
        server = self._server
        while self._exchange is None:
            item = conn.peek()
            if item is None:
                if self._reader.head_started or server.closing:
                    self._handoff(Handoff(self.deadline))
                return
            if (
                not isinstance(item, RequestHead)
                or item.framing is not Framing.NONE
                or item.switching
            ):
                self._handoff(Handoff(self.deadline))  # the coroutine takes it from the queue
                return
            conn.pop()
            request = server.prepare(conn, item)
            if isinstance(request, Outcome):
                if request is not Outcome.KEEP or server.closing:
                    self._handoff(Handoff(self.deadline, outcome=request))
                    return
                self._arm(self._loop.time() + server.idle_timeout_s)
                if conn.writing_paused:
                    self._handoff(Handoff(self.deadline))  # the coroutine drains first
                    return
                continue
            # `ended`: the held stream ended, or its app spoke unasked (then it is reset)
            if request.route is not self._up.route or not request.complete or self._up.ended():
                self._handoff(Handoff(self.deadline, head=item, request=request))
                return
            self._send(item, request)

    def _send(self, head: RequestHead, request: Prepared) -> None:
        server = self._server
        conn = self._conn
        up = self._up
        up.requests += 1
        exchange = server.exchange_for(conn, up, head, request.host)
        server.begin(exchange, head, request.route)
        self._head = head
        self._request = request
        self._exchange = exchange
        # Attempt 0 on a reused stream: retried on a new one if it turns out dead.
        self._retryable = head.method in IDEMPOTENT_METHODS and up.requests > 1
        self._bytes_before = conn.bytes_sent
        self._started = time.monotonic()
        data = request.first_write
        self._stream.send(data)  # what the window does not take is sent as it opens
        exchange.bytes_to_app += len(data)
        self._arm(self._loop.time() + server.timeout_s)
        self._on_upstream()

    # --- the app's side ------------------------------------------------------------------

    def _on_upstream(self) -> None:
        """The stream's rx callback: relay what the app sent to the visitor."""
        exchange = self._exchange
        if exchange is None or self._result is not None:
            return  # nothing asked: bytes wait in the stream, as they would for `read`
        conn = self._conn
        stream = self._stream
        relay = self._up.relay
        if conn.lost:
            self._abandon(exchange)
            return
        while not relay.complete:
            try:
                data = stream.read_nowait(READ_CHUNK_BYTES)
            except ConnectionError:
                data = b""  # a reset: the coroutine reads it again and answers
            if data is None:
                break
            if not data:
                self._handoff_sent()  # the end or a reset: a retry, or a page
                return
            exchange.got_bytes = True
            try:
                relay.feed(data)
            except BadResponse as exc:
                exchange.bad_response(exc)
                exchange.outcome = Outcome.CLOSE
                self._handoff_sent()
                return
            out = relay.take()
            if out:
                conn.writelines(out)
            if conn.lost:
                self._abandon(exchange)
                return
            if conn.writing_paused:
                self._handoff_sent()  # the coroutine drains, then goes on reading
                return
        if not relay.complete:
            if relay.final_sent:
                self.deadline = self._loop.time() + self._server.timeout_s
            return
        if not (relay.keep_visitor and relay.reusable) or self._server.closing:
            self._handoff_sent()  # the coroutine ends the stream or the connection
            return
        exchange.clean = True
        assert self._head is not None and self._request is not None
        conn.on_lost = None
        self._server.record(
            exchange,
            self._head,
            self._request.route,
            Outcome.KEEP,
            self._bytes_before,
            self._started,
        )
        self._exchange = self._head = self._request = None
        self._server.lane_served += 1
        self._arm(self._loop.time() + self._server.idle_timeout_s)
        self._pump()

    # --- the one timer -------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        self.deadline = deadline
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._result is not None:
            return
        if self._loop.time() < self.deadline:
            self._arm(self.deadline)  # the deadline moved on since the timer was set
            return
        if self._exchange is not None:
            self._handoff_sent()  # the coroutine answers 504 or resets, as its timeout would
        else:
            self._handoff(Handoff(self.deadline))  # 408 for a partial head, or a quiet close

    # --- giving the connection back ------------------------------------------------------

    def _abandon(self, exchange: Exchange) -> None:
        """The visitor is gone: reset the stream; the coroutine only records the exchange."""
        self._stream.abort()
        exchange.outcome = Outcome.CLOSE
        self._handoff_sent()

    def _handoff_sent(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        sent = Sent(exchange, self._retryable, self._bytes_before, self._started, self.deadline)
        self._handoff(Handoff(self.deadline, head=self._head, request=self._request, sent=sent))

    def _handoff(self, result: Handoff) -> None:
        if self._result is not None:
            return
        self._result = result
        self._stop()
        done = self._done
        if done is not None and not done.done():
            done.set_result(result)

    def _stop(self) -> None:
        """Give the connection and the stream back to the coroutine (idempotent)."""
        conn = self._conn
        if conn.feeder == self._feed:  # the reader may have switched it (discard, raw)
            conn.feeder = self._reader.feed
        if conn.on_notify == self._pump:
            conn.on_notify = None
        self._stream.set_rx_notify(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
