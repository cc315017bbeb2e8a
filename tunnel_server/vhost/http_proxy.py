"""The shared HTTP vhost listener (vhostHTTPPort): route each request by Host and path.

One `InboundProtocol` per visitor connection parses requests with httptools (see
`request.py`); one task per connection, owned by the server, runs `_serve`:

    wait for a request head (idle / slow-header deadlines)
    -> check Host and framing, normalize the path (400 / 501; see normalize.py)
    -> route, basic auth on the normalized path   (404 / 401 pages on failure)
    -> reuse the upstream stream if the route is the same, else close it and take one from
       the keep-alive pool (pool.py) or open a new one
    -> run one `Exchange` (request out, response back, maybe an upgrade splice)
    -> loop while both sides keep the connection alive; after the first request, while the
       held stream can call back, the connection's `Lane` (lane.py) serves plain requests
       from callbacks and hands back everything else

Keep-alive races: when a reused stream turns out to be dead before any response byte (the app
closed its idle connection), an idempotent request that was sent whole is retried once on a
new stream.

Limits: `max_connections` visitor connections (more are answered 503 and closed),
`max_header_bytes` per request head (431), `header_timeout_s` from the first byte of a head to
its end (408) and for the first request of a connection, `idle_timeout_s` between requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..stats import ProxyCounters
from .access import OnAccess, OnRequest, RequestRecord
from .exchange import IDEMPOTENT_METHODS, Exchange, Outcome, Upstream, take_ready_body
from .inbound import InboundProtocol
from .lane import Lane, Prepared, Sent
from .listener import DEFAULT_MAX_CONNECTIONS, SHUTDOWN_GRACE_S, VhostListener
from .normalize import BadRequestTarget, check_request
from .pages import error_response
from .pool import KeepAlivePool
from .replies import redirect, reply_error, skip_body
from .request import ParseFailure, RequestHead, RequestReader
from .rewrite import appended_headers, basic_auth_user, raw_head_ok, request_head
from .routing import HTTPRoute, VhostRouter, normalize_host
from .upstream import UpstreamError

logger = logging.getLogger(__name__)

ChallengeAnswer = Callable[[str], bytes | None]  # path -> a whole response, or None
HTTPSPortFor = Callable[[str], int | None]  # host -> the HTTPS port serving it, or None


class HTTPVhostServer(VhostListener):
    """The HTTP vhost listener. `start`, then `close` + `wait_closed` (or `async with`)."""

    _kind = "http vhost"

    def __init__(
        self,
        router: VhostRouter,
        *,
        timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        max_header_bytes: int = 64 * 1024,
        custom_404_page: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = 60.0,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        on_request: OnRequest | None = None,
        on_access: OnAccess | None = None,
        forwarded_proto: bytes = b"http",
        challenge_answer: ChallengeAnswer | None = None,
        https_port_for: HTTPSPortFor | None = None,
    ) -> None:
        super().__init__(max_connections=max_connections, shutdown_grace_s=shutdown_grace_s)
        self._router = router
        self._timeout_s = timeout_s
        self._header_timeout_s = header_timeout_s
        self._max_header_bytes = max_header_bytes
        self._page_404 = custom_404_page.encode("utf-8") if custom_404_page is not None else None
        self._idle_timeout_s = idle_timeout_s
        self._on_request = on_request
        self.on_access = on_access
        self._forwarded_proto = forwarded_proto  # X-Forwarded-Proto: "https" behind the edge
        self._challenge_answer = challenge_answer  # ACME HTTP-01, answered before routing
        self._https_port_for = https_port_for  # for redirectHTTP: the edge's port, if it can
        # Idle upstreams by (route, visitor IP), reused by the visitor's next connections.
        self.pool: KeepAlivePool[Upstream] = KeepAlivePool(_discard_upstream)
        self.lane_served = 0  # requests served whole from callbacks (lane.py)
        self.raw_heads = 0  # requests forwarded with the visitor's head as it came

    def close(self) -> None:
        super().close()
        self.pool.close()

    def _admit(self, conn: InboundProtocol) -> Coroutine[Any, Any, None]:
        reader = RequestReader(conn, self._max_header_bytes)
        conn.feeder = reader.feed
        return self._serve(conn, reader)

    def _turn_away(self, conn: InboundProtocol) -> None:
        conn.write(error_response(503, None))
        conn.close()

    def _deny(self, conn: InboundProtocol) -> None:
        conn.write(error_response(403, None, "your address is not allowed on this server"))
        conn.close()

    async def _serve(self, conn: InboundProtocol, reader: RequestReader) -> None:
        upstream: list[Upstream] = []  # at most one: the stream this connection holds
        clean = False
        try:
            clean = await self._serve_requests(conn, reader, upstream)
        finally:
            for up in upstream:
                # Only an upstream whose last exchange ended cleanly and whose response allowed
                # reuse is still held here (_handle lets go of any other).
                reusable = clean and up.relay.complete and up.relay.reusable
                if reusable and not up.ended():
                    if self.pool.put((up.route, conn.peer[0]), up):
                        continue
                if clean:
                    await up.close()
                else:
                    up.stream.abort()
            if clean:
                conn.close()
            else:
                conn.abort()

    async def _next_head(
        self, conn: InboundProtocol, reader: RequestReader, first: bool, deadline: float | None
    ) -> RequestHead | None:
        """Wait for the next request head; None means close (quietly or after a page)."""
        loop = conn.loop
        if deadline is None:
            deadline = loop.time() + (self._header_timeout_s if first else self._idle_timeout_s)
        started = False
        while True:
            item = conn.pop()
            if item is not None:
                break
            if reader.head_started and not started:
                started = True
                head_deadline = loop.time() + self._header_timeout_s
                deadline = min(deadline, head_deadline) if first else head_deadline
            if self.closing and not reader.head_started:
                return None
            if not await conn.wait(deadline):
                if reader.head_started:
                    conn.feeder = conn.discard
                    conn.write(error_response(408, None, "the request headers came too slowly"))
                return None
        if isinstance(item, RequestHead):
            return item
        if isinstance(item, ParseFailure):
            conn.write(error_response(item.status, None, item.detail))
        return None  # EOF, LOST, a parse failure

    async def _serve_requests(
        self, conn: InboundProtocol, reader: RequestReader, upstream: list[Upstream]
    ) -> bool:
        """Serve requests until the connection should end; True for a graceful close."""
        first = True
        deadline: float | None = None  # of the next head, when the lane set it
        while True:
            if conn.writing_paused and not await self._drained(conn):
                return False
            if upstream and upstream[0].lane is not None and not reader.head_started:
                # Keep-alive on a stream that calls back: serve from callbacks (lane.py)
                # until something needs this coroutine.
                lane = Lane(self, conn, reader, upstream[0])
                handoff = await lane.run(conn.loop.time() + self._idle_timeout_s)
                deadline = handoff.deadline
                if handoff.outcome is not None:
                    outcome: Outcome | None = handoff.outcome
                elif handoff.head is not None and handoff.request is not None:
                    outcome = await self._forward(
                        conn, handoff.head, handoff.request, upstream, handoff.sent
                    )
                else:
                    outcome = None
                if outcome is not None:
                    if outcome is not Outcome.KEEP or self.closing:
                        return not conn.lost
                    deadline = None
                    continue
            head = await self._next_head(conn, reader, first, deadline)
            deadline = None
            if head is None:
                return not conn.lost
            first = False
            outcome = await self._handle(conn, head, upstream)
            if outcome is not Outcome.KEEP or self.closing:
                return not conn.lost

    async def _drained(self, conn: InboundProtocol) -> bool:
        """Wait until the visitor takes what was written (pipelined error pages) before the
        next request; False (the connection reset) if it takes nothing for timeout_s."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.drain()
        except TimeoutError:
            conn.abort()
            return False
        return not conn.lost

    async def _handle(
        self, conn: InboundProtocol, head: RequestHead, upstream: list[Upstream]
    ) -> Outcome:
        request = self.prepare(conn, head)
        if isinstance(request, Outcome):
            return request
        return await self._forward(conn, head, request, upstream, None)

    def prepare(self, conn: InboundProtocol, head: RequestHead) -> Prepared | Outcome:
        """Check, route and authorize a request and build what goes to the app; an Outcome
        when it was answered here (an error page, a redirect, an ACME challenge)."""
        authorization = head.authorization
        router = self._router
        cached = conn.route_cache
        if (
            cached is not None
            and head.raw is not None
            and authorization is None
            and head.host_count == 1
            and cached[0] == router.version
            and cached[2] == head.target
            and cached[1] == head.host
        ):
            # The Host and target of a request this connection checked, and the exact-name
            # table routed, unchanged since: check_request and the lookup would answer the same
            # (a raw head has no framing, version or upgrade for them to refuse).
            _, host_raw, _, host, path, found = cached
            target = head.target
            route: HTTPRoute | None = found
        else:
            try:
                host_raw, target, path = check_request(head)
            except BadRequestTarget as exc:
                return reply_error(conn, head, exc.status, None, str(exc))
            host = host_raw.decode("latin-1")
            if head.switching and head.upgrade is None:
                return reply_error(conn, head, 405, host, "CONNECT is not supported")
            user = basic_auth_user(authorization) if authorization is not None else ""
            route, exact = router.find(host, path, user)
            if (
                route is not None
                and exact
                and head.raw is not None
                and authorization is None
                and head.host_count == 1
                and target is head.target
                and target[:1] == b"/"  # check_request allows `*` for OPTIONS alone
            ):
                conn.route_cache = (router.version, host_raw, target, host, path, route)
        if self._challenge_answer is not None:
            answer = self._challenge_answer(path)
            if answer is not None:
                skip_body(conn)
                conn.write(answer)
                return Outcome.CLOSE
        if route is None:
            return reply_error(conn, head, 404, host, None, body=self._page_404)
        if route.redirect_http and self._https_port_for is not None:
            # redirectHTTP: a 308 to HTTPS, once the edge holds a certificate for the host
            name = normalize_host(host)
            port = self._https_port_for(name)
            if port is not None:
                return redirect(conn, head, name, port, target)
        if route.rules.auth is not None and not route.rules.check_auth(head.authorization):
            return reply_error(
                conn,
                head,
                401,
                host,
                None,
                extra=((b"WWW-Authenticate", b'Basic realm="tunnelkit"'),),
            )
        parts, complete = take_ready_body(conn, head.framing)
        raw = head.raw
        rules = route.rules
        if raw is not None and target is head.target and raw_head_ok(rules):
            # The visitor's head goes as it came (request.py proves it says what the rebuild
            # would), then the vhost's own headers, made once per connection, host and route.
            tail = conn.head_tail
            if tail is None or tail[0] is not rules or tail[1] != host_raw:
                peer_ip = conn.peer[0].encode("ascii")
                block = appended_headers(rules, host_raw, peer_ip, self._forwarded_proto)
                tail = conn.head_tail = (rules, host_raw, block)
            self.raw_heads += 1
            if parts:
                parts[0:0] = (raw[:-2], tail[2])
            else:
                return Prepared(route, host, raw[:-2] + tail[2], complete)
        else:
            parts.insert(0, self._rebuilt_head(conn, head, route, host_raw, target))
        first_write = parts[0] if len(parts) == 1 else b"".join(parts)
        return Prepared(route, host, first_write, complete)

    def _rebuilt_head(
        self,
        conn: InboundProtocol,
        head: RequestHead,
        route: HTTPRoute,
        host_raw: bytes,
        target: bytes,
    ) -> bytes:
        """The request head built from the parsed one (rewrite.request_head)."""
        return request_head(
            method=head.method,
            target=target,
            headers=head.headers,
            connection_tokens=head.connection_tokens,
            rules=route.rules,
            host=host_raw,
            framing=head.framing,
            upgrade=head.upgrade,
            peer_ip=conn.peer[0].encode("ascii"),
            proto=self._forwarded_proto,
        )

    async def _forward(
        self,
        conn: InboundProtocol,
        head: RequestHead,
        request: Prepared,
        upstream: list[Upstream],
        sent: Sent | None,
    ) -> Outcome:
        """Send the request (unless the lane `sent` it) and relay the answer, with one retry
        on a new stream when a reused one was dead."""
        route, host, first_write, complete = request
        # Only a request sent whole can be sent again, and only if repeating it is harmless.
        can_retry = complete and head.method in IDEMPOTENT_METHODS
        for attempt in range(2):
            if sent is not None and attempt == 0:
                exchange, up = sent.exchange, sent.exchange.upstream
                try:
                    outcome = await exchange.resume(sent.deadline, retryable=sent.retryable)
                finally:
                    conn.on_lost = None
                self.record(exchange, head, route, outcome, sent.bytes_before, sent.started)
            else:
                maybe = await self._upstream_for(conn, route, upstream, host, head)
                if maybe is None:
                    return Outcome.CLOSE
                up = maybe
                up.requests += 1
                retryable = can_retry and attempt == 0 and up.requests > 1
                exchange = self.exchange_for(conn, up, head, host)
                outcome = await self._exchange(
                    exchange, head, route, first_write, complete, retryable=retryable
                )
            if outcome is Outcome.RETRY:
                logger.debug("[proxy=%s] reused stream was dead; retrying", route.proxy_key)
                upstream.clear()
                up.stream.abort()
                continue
            if not up.relay.reusable or outcome is not Outcome.KEEP:
                upstream.clear()
                if exchange.clean:
                    await up.close()
                else:
                    up.stream.abort()
            return outcome
        return Outcome.CLOSE  # unreachable: the second attempt is never retryable

    async def _upstream_for(
        self,
        conn: InboundProtocol,
        route: HTTPRoute,
        upstream: list[Upstream],
        host: str,
        head: RequestHead,
    ) -> Upstream | None:
        """The stream for this route: the held one if it matches, else a new one."""
        if upstream:
            # A held stream whose app side already ended (it closed its idle keep-alive
            # connection) is not reused: a POST on it could not be retried.
            # Nor is one whose app spoke unasked (`Upstream.ended`).
            if upstream[0].route is route and not upstream[0].ended():
                return upstream[0]
            old = upstream.pop()
            await old.close()
        while (pooled := self.pool.take((route, conn.peer[0]))) is not None:
            if not pooled.ended():  # the app may have closed it (or spoken) while it was idle
                upstream.append(pooled)
                counters = getattr(pooled.stream, "counters", None)
                if isinstance(counters, ProxyCounters):
                    # a new visitor connection on a reused stream still counts as one
                    counters.connections_total += 1
                return pooled
            pooled.stream.abort()
        status, detail = 502, ""
        try:
            async with asyncio.timeout(self._timeout_s):
                stream = await route.opener(conn.peer)
        except TimeoutError:
            status, detail = 504, "the tunnel did not open in time"
        except UpstreamError as exc:
            status, detail = exc.status, exc.reason
        except (ConnectionError, OSError) as exc:
            detail = f"cannot reach the app: {exc.strerror or exc}"
        else:
            if conn.lost:
                stream.abort()
                return None
            up = Upstream(route, stream, self._max_header_bytes)
            upstream.append(up)
            return up
        logger.debug("[proxy=%s] open failed: %s", route.proxy_key, detail)
        skip_body(conn)
        note = route.offline_note if status == 502 else None
        head_only = head.method == b"HEAD"
        conn.write(error_response(status, host, detail, head_only=head_only, note=note))
        return None

    def exchange_for(
        self, conn: InboundProtocol, up: Upstream, head: RequestHead, host: str
    ) -> Exchange:
        return Exchange(
            conn,
            up,
            host=host,
            framing=head.framing,
            head_request=head.method == b"HEAD",
            timeout_s=self._timeout_s,
        )

    @staticmethod
    def begin(exchange: Exchange, head: RequestHead, route: HTTPRoute) -> None:
        """Ready the response parser for this request; a lost visitor resets the stream."""
        up = exchange.upstream
        up.relay.start(
            rules=route.rules,
            head_request=exchange.head_request,
            client_http11=head.http11,
            client_keep_alive=head.keep_alive and not head.switching,
            upgrade_requested=head.upgrade is not None,
        )
        exchange.conn.on_lost = up.stream.abort

    def record(
        self,
        exchange: Exchange,
        head: RequestHead,
        route: HTTPRoute,
        outcome: Outcome,
        sent_before: int,
        started: float,
    ) -> None:
        """Count a finished exchange (stats) and write its access record."""
        if outcome is Outcome.RETRY:
            return
        conn = exchange.conn
        if self._on_request is not None:
            self._on_request(route.proxy_name, exchange.bytes_to_app, conn.bytes_sent - sent_before)
        if self.on_access is not None:
            target = head.target.split(b"?", 1)[0]
            self.on_access(
                RequestRecord(
                    proxy=route.proxy_name,
                    peer=conn.peer,
                    method=head.method.decode("latin-1"),
                    host=exchange.host,
                    path=target.decode("latin-1"),
                    status=exchange.upstream.relay.status,
                    seconds=time.monotonic() - started,
                    bytes_in=exchange.bytes_to_app,
                    bytes_out=conn.bytes_sent - sent_before,
                )
            )

    async def _exchange(
        self,
        exchange: Exchange,
        head: RequestHead,
        route: HTTPRoute,
        first_write: bytes,
        complete: bool,
        *,
        retryable: bool,
    ) -> Outcome:
        conn = exchange.conn
        self.begin(exchange, head, route)
        sent_before = conn.bytes_sent
        started = time.monotonic()
        try:
            outcome = await exchange.run(first_write, complete, retryable=retryable)
        finally:
            conn.on_lost = None
        self.record(exchange, head, route, outcome, sent_before, started)
        return outcome

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def idle_timeout_s(self) -> float:
        return self._idle_timeout_s


def _discard_upstream(up: Upstream) -> None:
    """An idle pooled upstream that timed out or was pushed out: close it gracefully."""
    up.stream.close()
