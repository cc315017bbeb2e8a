"""The Prometheus view of the server's counters (stats.py), built at scrape time.

`StatsCollector` turns the counters into Prometheus metric families when ``/metrics`` is
scraped, so there is no per-increment cost for metrics and nothing registers itself on the
global registry. Only the dashboard imports this module (and with it prometheus_client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from protocol.proxytype import ProxyType

from .stats import LimitCounters, ServerStats

if TYPE_CHECKING:
    from tunnel_server.web.view import CertificateReport, ServerView


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
