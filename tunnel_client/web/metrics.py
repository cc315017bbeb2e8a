"""Prometheus /metrics on the client admin API: each proxy's state, bandwidth limit and
current rate, health checks and plugin, read from `status()` at scrape time (the same rows
the JSON API and `tunnelc status` show, so the three never disagree)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

StatusRows = Callable[[], list[dict[str, object]]]


class ClientCollector:
    def __init__(self, status: StatusRows, visitors: StatusRows) -> None:
        self._status = status
        self._visitors = visitors

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tunnelc_proxy_up", "1 if the server runs this proxy now.", labels=["proxy", "type"]
        )
        limit = GaugeMetricFamily(
            "tunnelc_proxy_bandwidth_limit_bytes_per_second",
            "transport.bandwidthLimit of each limited proxy.",
            labels=["proxy", "mode"],
        )
        rate = GaugeMetricFamily(
            "tunnelc_proxy_bandwidth_rate_bytes_per_second",
            "Bytes per second through each limited proxy, both directions, last 2 s.",
            labels=["proxy"],
        )
        paced = CounterMetricFamily(
            "tunnelc_proxy_bandwidth_bytes",
            "Bytes counted against each proxy's bandwidth limit.",
            labels=["proxy"],
        )
        healthy = GaugeMetricFamily(
            "tunnelc_proxy_healthy",
            "1 healthy, 0 unhealthy (absent until the first check finished).",
            labels=["proxy", "check"],
        )
        failures = GaugeMetricFamily(
            "tunnelc_proxy_health_failures",
            "Health checks failed in a row.",
            labels=["proxy"],
        )
        plugin = GaugeMetricFamily(
            "tunnelc_proxy_plugin_info",
            "The plugin serving each proxy.",
            labels=["proxy", "plugin"],
        )
        for row in self._status():
            name = str(row["name"])
            up.add_metric([name, str(row["type"])], 1 if row["state"] == "running" else 0)
            bandwidth = row.get("bandwidth")
            if isinstance(bandwidth, dict):
                limit.add_metric(
                    [name, str(bandwidth["mode"])], float(bandwidth["limit_bytes_per_s"])
                )
                if "rate_bytes_per_s" in bandwidth:  # paced here ("client" mode)
                    rate.add_metric([name], float(bandwidth["rate_bytes_per_s"]))
                    paced.add_metric([name], float(bandwidth["bytes_total"]))
            health = row.get("health")
            if isinstance(health, dict):
                if health["healthy"] is not None:
                    healthy.add_metric([name, str(health["type"])], 1 if health["healthy"] else 0)
                failures.add_metric([name], float(health["failures"]))
            info = row.get("plugin")
            if isinstance(info, dict):
                plugin.add_metric([name, str(info["type"])], 1)
        yield from (up, limit, rate, paced, healthy, failures, plugin)
        yield from _visitor_metrics(self._visitors())


def _visitor_metrics(rows: list[dict[str, object]]) -> Iterator[Metric]:
    labels = ["visitor", "server", "path"]
    active = GaugeMetricFamily(
        "tunnelc_visitor_connections",
        "Connections (stcp) or UDP peers (sudp) of each visitor open now, by path.",
        labels=labels,
    )
    total = CounterMetricFamily(
        "tunnelc_visitor_connections", "Connections each visitor opened.", labels=labels
    )
    refused = CounterMetricFamily(
        "tunnelc_visitor_refused", "Connections of each visitor that were refused.", labels=labels
    )
    for row in rows:
        key = [str(row["name"]), str(row["server"]), str(row["path"])]
        active.add_metric(key, float(str(row["connections_active"])))
        total.add_metric(key, float(str(row["connections_total"])))
        refused.add_metric(key, float(str(row["refused"])))
    yield from (active, total, refused)


def build_client_registry(status: StatusRows, visitors: StatusRows) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClientCollector(status, visitors))
    return registry
