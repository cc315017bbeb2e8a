"""The one path from a public visitor to a mux stream, for every proxy kind.

`UserConns.open_stream(src)` admits a visitor (the server's and the proxy's IP rules, the
user's connection quota), checks the proxy's stream bound (`maxStreamsPerProxy`) and, for kinds
that hold a visitor socket of their own, the descriptor budget; then it opens the stream to the
client, sets the accept deadline, counts it on the proxy's `ProxyCounters` and tracks it until
it closes. A refusal raises `UserConnRefused` with a reason and the HTTP status an HTTP visitor
gets; it is counted, and logged at most once per REFUSAL_LOG_INTERVAL_S.

A load-balanced group (groups.py) calls `open_stream` of the member it picks, so counting and
limits stay per member proxy.
"""

from __future__ import annotations

import logging
import math
from typing import Final, NoReturn

from protocol.aio.stream import MuxStream
from protocol.errors import LocalProtocolError
from protocol.messages import StreamHeader

from .base import ProxyContext

logger = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S: Final = 60.0  # one "refusing" line per proxy per minute at most
STATUS_BAD_GATEWAY: Final = 502
STATUS_UNAVAILABLE: Final = 503


class UserConnRefused(Exception):
    """A visitor was not let through; `status` is what an HTTP visitor is answered."""

    def __init__(self, reason: str, status: int = STATUS_BAD_GATEWAY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class UserConns:
    """One proxy's open user connections (each a mux stream), bounded and counted."""

    def __init__(
        self, ctx: ProxyContext, name: str, kind: str, *, holds_socket: bool, compression: str = ""
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.kind = kind  # "tcp", "http", "https", ...: access-log lines and plugin bodies
        # A kind whose visitor socket is its own (tcp) spends the descriptor budget and writes
        # one access line per connection; the vhost listeners do both for http and https.
        self.holds_socket = holds_socket
        self.compression = compression  # new_proxy.compression, named in each stream's header
        self._streams: set[MuxStream] = set()
        self._last_refusal_log = -math.inf

    def __len__(self) -> int:
        return len(self._streams)

    def open_stream(self, src: tuple[str, int], *, screened: bool = False) -> MuxStream:
        """A new stream to the client's service for a visitor from `src`, or UserConnRefused.
        `screened`: the caller has already applied the visitor rules (before a plugin call)."""
        ctx = self.ctx
        if ctx.session.closed:
            raise UserConnRefused("the tunnel client is offline")
        visitors = ctx.visitors
        if visitors is not None and not screened:
            refusal = visitors.refusal(src[0])
            if refusal is not None:
                visitors.refused(self.kind, src, refusal)
                raise UserConnRefused(refusal.reason, refusal.status)
        now = ctx.session.loop.time()  # not get_running_loop(): on 3.11 that is a getpid
        counters = ctx.counters
        if len(self._streams) >= ctx.config.max_streams_per_proxy:
            # One proxy's flood must not use up its client's other proxies' streams.
            counters.refused_flows += 1
            self._refused(
                now, f"this proxy has {len(self._streams)} open connections (maxStreamsPerProxy)"
            )
        if self.holds_socket and not ctx.fd_budget.try_acquire(now):
            counters.refused_flows += 1
            raise UserConnRefused("the server is out of descriptors", STATUS_UNAVAILABLE)
        try:
            header = StreamHeader(ctx.local_name, src[0], src[1], self.compression)
            stream = ctx.session.open_stream(header)
        except (LocalProtocolError, ConnectionError) as exc:
            if self.holds_socket:
                ctx.fd_budget.release()
            counters.refused_flows += 1
            self._refused(now, f"the tunnel client cannot take more connections: {exc}")
        stream.set_accept_deadline(ctx.config.user_conn_timeout)
        stream.counters = counters
        counters.connections_total += 1
        counters.connections_active += 1
        self._streams.add(stream)
        if self.holds_socket and visitors is not None:
            visitors.opened(stream)
        stream.add_close_callback(self.closed)
        return stream

    def closed(self, stream: MuxStream) -> None:
        """A stream ended (idempotent: the splice and the stream may both report it)."""
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        ctx = self.ctx
        ctx.counters.connections_active -= 1
        if self.holds_socket:
            if ctx.visitors is not None:
                ctx.visitors.closed(stream)
            ctx.fd_budget.release()

    def abort_all(self, reason: str) -> None:
        for stream in list(self._streams):
            stream.abort(reason=reason)
            self.closed(stream)

    def _refused(self, now: float, why: str) -> NoReturn:
        """Raise the refusal; log it at most once per REFUSAL_LOG_INTERVAL_S (counted always)."""
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL_S:
            self._last_refusal_log = now
            logger.warning(
                "[proxy=%s] refusing visitor connections: %s (%d refused so far)",
                self.name,
                why,
                self.ctx.counters.refused_flows,
            )
        raise UserConnRefused(why)
