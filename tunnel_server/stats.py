"""Server counters: the one place they live, and their Prometheus view.

The hot path (splices, UDP relays, the login handler) increments plain ``int`` attributes on
`ProxyCounters` and `ServerStats` directly: no locks, no method calls, no label lookups. The
dashboard, the ``/metrics`` endpoint and the logs all read these same objects; nothing else
keeps a second copy.

Direction convention for bytes: ``bytes_in`` flows from public users towards the client's
local service, ``bytes_out`` flows back from the local service to the users.

Their Prometheus view, `StatsCollector`, lives in metrics.py: only the dashboard's
``/metrics`` imports it (and prometheus_client), so a server without webServer never loads
them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Final

logger = logging.getLogger(__name__)

# Counters of closed proxies are kept (the dashboard shows them as offline, and Prometheus
# counters should not vanish on a short reconnect). Overflow policy: evict the entry that was
# registered longest ago, and count the eviction in `ServerStats.evicted_proxies`.
DEFAULT_MAX_TRACKED_PROXIES: Final = 65_536


class ProxyCounters:
    """Plain integer counters for one proxy; the hot path adds to them directly."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections_active",
        "connections_total",
        "dropped_datagrams",
        "refused_flows",
        "refused_visitors",
    )

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections_total = 0
        self.connections_active = 0
        self.dropped_datagrams = 0
        self.refused_flows = 0
        self.refused_visitors = 0  # by an IP rule or a user's connection quota

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in self.__slots__)
        return f"ProxyCounters({fields})"


class LimitCounters:
    """How often each pre-login and descriptor limit was hit, and the gauges behind them.

    Written by the pending-login table, the control listener and the descriptor budget;
    read by /metrics (names in `StatsCollector`).
    """

    __slots__ = (
        "busy_answers",
        "busy_closed",
        "fd_accept_failures",
        "fd_refused",
        "pending_evicted",
        "pending_logins",
        "tls_failures",
        "visitor_fds",
        "visitor_fds_limit",
    )

    def __init__(self) -> None:
        self.pending_logins = 0  # gauge: connections not logged in now
        self.pending_evicted = 0  # oldest pending connection closed for a newcomer
        self.busy_answers = 0  # "busy, retry after N ms" sent
        self.busy_closed = 0  # closed at once: even the busy budget was spent
        self.tls_failures = 0  # handshakes that failed, stalled or were reset
        self.visitor_fds = 0  # gauge: descriptors held by visitor connections now
        self.visitor_fds_limit = 0  # gauge: the budget for them
        self.fd_refused = 0  # visitor connections refused for want of descriptors
        self.fd_accept_failures = 0  # control-port accepts that failed (EMFILE/ENFILE)


class ServerStats:
    """Every server-wide counter, plus one `ProxyCounters` per proxy name."""

    def __init__(
        self,
        *,
        max_proxies: int = DEFAULT_MAX_TRACKED_PROXIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_proxies < 1:
            raise ValueError(f"max_proxies must be at least 1, got {max_proxies}")
        self.max_proxies: Final = max_proxies
        self.started_at: Final = clock()
        self.auth_failures = 0
        self.sessions_total = 0
        self.visitor_joins = 0  # stcp/sudp visitor streams joined to their proxy
        self.visitor_refusals = 0  # and refused (wrong secret, allowUsers, bounds, ...)
        self.limits = LimitCounters()
        self.evicted_proxies = 0
        self.refused_controls = 0  # control connections refused by the server's IP rules
        # vhost route claims refused, by reason: "owner", "quota", "table" (vhost/claims.py)
        self.vhost_route_refusals: dict[str, int] = {"owner": 0, "quota": 0, "table": 0}
        # Insertion-ordered: the first key is the one registered longest ago.
        self._proxies: dict[str, ProxyCounters] = {}

    def proxy(self, name: str) -> ProxyCounters:
        """Return the counters for proxy `name`, creating them on first use.

        A proxy that comes back under the same name continues its old counters, as frp's
        dashboard does.
        """
        counters = self._proxies.pop(name, None)
        if counters is None:
            counters = ProxyCounters()
            if len(self._proxies) >= self.max_proxies:
                oldest = next(iter(self._proxies))
                del self._proxies[oldest]
                self.evicted_proxies += 1
                logger.debug(
                    "[proxy=%s] stats evicted: more than %d proxies tracked",
                    oldest,
                    self.max_proxies,
                )
        # Re-inserting moves the name to the young end of the eviction order.
        self._proxies[name] = counters
        return counters

    def get(self, name: str) -> ProxyCounters | None:
        """Return the counters for `name` without creating them."""
        return self._proxies.get(name)

    def remove_proxy(self, name: str) -> None:
        """Forget the counters of `name` (idempotent)."""
        self._proxies.pop(name, None)

    def items(self) -> Iterator[tuple[str, ProxyCounters]]:
        """Iterate over (proxy name, counters), oldest registration first."""
        return iter(list(self._proxies.items()))

    def totals(self) -> ProxyCounters:
        """Sum the counters of every tracked proxy into a fresh `ProxyCounters`."""
        total = ProxyCounters()
        for counters in self._proxies.values():
            total.bytes_in += counters.bytes_in
            total.bytes_out += counters.bytes_out
            total.connections_total += counters.connections_total
            total.connections_active += counters.connections_active
            total.dropped_datagrams += counters.dropped_datagrams
            total.refused_flows += counters.refused_flows
            total.refused_visitors += counters.refused_visitors
        return total
