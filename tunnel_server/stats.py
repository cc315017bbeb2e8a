"""Server counters: the one place they live, and their Prometheus view.

The hot path (splices, UDP relays, the login handler) increments plain ``int`` attributes on
`ProxyCounters` and `ServerStats` directly: no locks, no method calls, no label lookups. The
dashboard, the ``/metrics`` endpoint and the logs all read these same objects; nothing else
keeps a second copy.

Direction convention for bytes: ``bytes_in`` flows from public users towards the client's
local service, ``bytes_out`` flows back from the local service to the users.

`StatsCollector` turns the counters into Prometheus metric families at scrape time, so there is
no per-increment cost for metrics and nothing registers itself on the global registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from protocol.proxytype import ProxyType

if TYPE_CHECKING:
    from tunnel_server.web.view import CertificateReport, ServerView

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


class StatsCollector:
    """A prometheus_client collector that reads `ServerStats` and the view at scrape time."""

    def __init__(
        self,
        stats: ServerStats,
        view: ServerView,
        certificates: Callable[[], CertificateReport] | None = None,
    ) -> None:
        self._stats = stats
        self._view = view
        self._certificates = certificates

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        clients = GaugeMetricFamily("tunnelkit_clients", "Clients logged in now.")
        clients.add_metric([], len(self._view.clients()))
        yield clients

        online: dict[str, int] = {member.value: 0 for member in ProxyType}
        for info in self._view.proxies():
            if info.status == "online":
                online[info.type] = online.get(info.type, 0) + 1
        proxies = GaugeMetricFamily(
            "tunnelkit_proxies", "Proxies online now, by type.", labels=["type"]
        )
        for proxy_type, count in sorted(online.items()):
            proxies.add_metric([proxy_type], count)
        yield proxies

        limit = GaugeMetricFamily(
            "tunnelkit_proxy_bandwidth_limit_bytes_per_second",
            'The limit tunneld paces each proxy at (bandwidthLimitMode = "server").',
            labels=["proxy"],
        )
        rate = GaugeMetricFamily(
            "tunnelkit_proxy_bandwidth_rate_bytes_per_second",
            "Bytes per second through each server-paced proxy, both directions, last 2 s.",
            labels=["proxy"],
        )
        for info in self._view.proxies():
            if info.bandwidth_limit:
                limit.add_metric([info.name], info.bandwidth_limit)
                rate.add_metric([info.name], info.bandwidth_rate)
        yield from (limit, rate)

        active = GaugeMetricFamily(
            "tunnelkit_proxy_connections_active",
            "User connections open now through each proxy.",
            labels=["proxy"],
        )
        connections = CounterMetricFamily(
            "tunnelkit_proxy_connections_total",
            "User connections accepted by each proxy.",
            labels=["proxy"],
        )
        traffic = CounterMetricFamily(
            "tunnelkit_proxy_bytes_total",
            "Bytes relayed by each proxy; direction 'in' is towards the local service.",
            labels=["proxy", "direction"],
        )
        dropped = CounterMetricFamily(
            "tunnelkit_udp_dropped_datagrams_total",
            "UDP datagrams dropped by each proxy because a bound was reached.",
            labels=["proxy"],
        )
        refused = CounterMetricFamily(
            "tunnelkit_proxy_refused_flows_total",
            "Connections or UDP flows refused by each proxy because a bound was reached.",
            labels=["proxy"],
        )
        denied = CounterMetricFamily(
            "tunnelkit_proxy_refused_visitors_total",
            "Visitors refused by each proxy: IP rules (allowIPs/denyIPs) or a user quota.",
            labels=["proxy"],
        )
        for name, counters in stats.items():
            active.add_metric([name], counters.connections_active)
            connections.add_metric([name], counters.connections_total)
            traffic.add_metric([name, "in"], counters.bytes_in)
            traffic.add_metric([name, "out"], counters.bytes_out)
            dropped.add_metric([name], counters.dropped_datagrams)
            refused.add_metric([name], counters.refused_flows)
            denied.add_metric([name], counters.refused_visitors)
        yield from (active, connections, traffic, dropped, refused, denied)

        route_refusals = CounterMetricFamily(
            "tunnelkit_vhost_route_refusals_total",
            "http/https route claims refused: domain owned by another user, the client's "
            "route quota (maxVhostRoutesPerClient), or the full route table.",
            labels=["reason"],
        )
        for reason, count in sorted(stats.vhost_route_refusals.items()):
            route_refusals.add_metric([reason], count)
        yield route_refusals

        visitors = GaugeMetricFamily(
            "tunnelkit_proxy_visitors",
            "Visitors joined now to each stcp/sudp proxy, by path (relayed through tunneld).",
            labels=["proxy", "path"],
        )
        for info in self._view.proxies():
            if info.path:
                visitors.add_metric([info.name, info.path], len(info.visitors))
        yield visitors
        punches = CounterMetricFamily(
            "tunnelkit_xtcp_rendezvous_total",
            "xtcp rendezvous per proxy by result: started, direct (a P2P path was made), "
            "failed (the visitor relays).",
            labels=["proxy", "result"],
        )
        for info in self._view.proxies():
            for result, count in sorted(info.p2p.items()):
                punches.add_metric([info.name, result], count)
        yield punches
        yield CounterMetricFamily(
            "tunnelkit_visitor_joins_total",
            "stcp/sudp visitor connections joined to their proxy.",
            value=stats.visitor_joins,
        )
        yield CounterMetricFamily(
            "tunnelkit_visitor_refusals_total",
            "stcp/sudp visitor connections refused (secret, allowUsers, unknown proxy, bounds).",
            value=stats.visitor_refusals,
        )
        yield CounterMetricFamily(
            "tunnelkit_auth_failures_total", "Failed client logins.", value=stats.auth_failures
        )
        yield CounterMetricFamily(
            "tunnelkit_sessions_total",
            "Client sessions that logged in.",
            value=stats.sessions_total,
        )
        if self._certificates is not None:
            yield from _certificate_metrics(self._certificates())
        yield from _limit_metrics(stats.limits)


def _limit_metrics(limits: LimitCounters) -> Iterator[Metric]:
    """The pre-login and descriptor limits (docs/security.md names each one)."""
    gauges = (
        (
            "tunnelkit_pending_logins",
            "Connections on bindPort not logged in yet.",
            "pending_logins",
        ),
        ("tunnelkit_visitor_fds", "Descriptors held by visitor connections.", "visitor_fds"),
        (
            "tunnelkit_visitor_fds_limit",
            "Descriptors visitor connections may hold (the rest is reserved for logins).",
            "visitor_fds_limit",
        ),
    )
    for name, doc, attr in gauges:
        yield GaugeMetricFamily(name, doc, value=getattr(limits, attr))
    counters = (
        (
            "tunnelkit_pending_logins_evicted_total",
            "Pending logins closed to make room for a newer one (maxPendingLogins[PerIP]).",
            "pending_evicted",
        ),
        ("tunnelkit_login_busy_total", "Logins answered 'busy, retry later'.", "busy_answers"),
        (
            "tunnelkit_login_busy_closed_total",
            "Connections closed at once because even the busy answers were at their limit.",
            "busy_closed",
        ),
        (
            "tunnelkit_tls_handshake_failures_total",
            "Control-port TLS handshakes that failed, stalled past the deadline or were reset.",
            "tls_failures",
        ),
        (
            "tunnelkit_visitor_fd_refused_total",
            "Visitor connections refused because the descriptor budget was spent.",
            "fd_refused",
        ),
        (
            "tunnelkit_control_accept_failures_total",
            "Control-port accepts that failed for want of descriptors.",
            "fd_accept_failures",
        ),
    )
    for name, doc, attr in counters:
        yield CounterMetricFamily(name, doc, value=getattr(limits, attr))


def _certificate_metrics(report: CertificateReport) -> Iterator[Metric]:
    """The HTTPS edge's certificates: expiry per name, failures, ACME totals."""
    expiry = GaugeMetricFamily(
        "tunnelkit_certificate_expiry_timestamp_seconds",
        "When each name's certificate expires (Unix time).",
        labels=["name", "source"],
    )
    failing = GaugeMetricFamily(
        "tunnelkit_certificate_consecutive_failures",
        "Failed ACME orders in a row for each name (0 once one succeeds).",
        labels=["name", "state"],
    )
    for row in report.certificates:
        if row.not_after is not None:
            expiry.add_metric([row.name, row.source], row.not_after)
        failing.add_metric([row.name, row.state], row.failures)
    yield expiry
    yield failing
    yield CounterMetricFamily(
        "tunnelkit_acme_orders_total",
        "Certificate orders sent to the CA.",
        value=report.orders_total,
    )
    yield CounterMetricFamily(
        "tunnelkit_acme_failures_total",
        "Certificate orders that failed (each is retried with backoff).",
        value=report.failures_total,
    )


def build_metrics_registry(
    stats: ServerStats,
    view: ServerView,
    certificates: Callable[[], CertificateReport] | None = None,
) -> CollectorRegistry:
    """Return a private registry holding only a `StatsCollector` (never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, view, certificates))
    return registry
