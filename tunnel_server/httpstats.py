"""HTTP status and latency per proxy, for /metrics.

Fed by the HTTP vhost's access hook (one `observe` per request relayed). Status codes are kept
by class ("2xx" ... "5xx", and "none" when no response head came back) so a proxy has at most
six status series; latency goes into fixed histogram buckets. The table is bounded like the
proxy counters (oldest entry evicted), and entries go when their proxy's series expire.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


class ProxyHTTPStats:
    __slots__ = ("buckets", "count", "statuses", "total_s")

    def __init__(self) -> None:
        self.statuses = dict.fromkeys(STATUS_CLASSES, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last is +Inf
        self.count = 0
        self.total_s = 0.0

    def observe(self, status: int, seconds: float) -> None:
        key = STATUS_CLASSES[status // 100 - 1] if 100 <= status <= 599 else "none"
        self.statuses[key] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.count += 1
        self.total_s += seconds


class HTTPStats:
    """proxy name -> ProxyHTTPStats, at most `max_proxies` (oldest evicted)."""

    def __init__(self, max_proxies: int) -> None:
        self.max_proxies = max_proxies
        self._by_proxy: dict[str, ProxyHTTPStats] = {}

    def observe(self, proxy: str, status: int, seconds: float) -> None:
        entry = self._by_proxy.get(proxy)
        if entry is None:
            if len(self._by_proxy) >= self.max_proxies:
                del self._by_proxy[next(iter(self._by_proxy))]
            entry = self._by_proxy[proxy] = ProxyHTTPStats()
        entry.observe(status, seconds)

    def get(self, proxy: str) -> ProxyHTTPStats | None:
        return self._by_proxy.get(proxy)

    def pop(self, proxy: str, default: None = None) -> ProxyHTTPStats | None:
        return self._by_proxy.pop(proxy, default)

    def collect(self) -> Iterator[Metric]:
        # Imported here: only a /metrics scrape needs prometheus_client (about 5 MiB).
        from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

        responses = CounterMetricFamily(
            "tunnelkit_http_responses",
            "HTTP responses relayed by each http proxy, by status class.",
            labels=["proxy", "code"],
        )
        latency = HistogramMetricFamily(
            "tunnelkit_http_request_duration_seconds",
            "Time from an HTTP request's head to the end of its response, per http proxy.",
            labels=["proxy"],
        )
        for name, entry in list(self._by_proxy.items()):
            for code, count in entry.statuses.items():
                responses.add_metric([name, code], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), entry.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([name], buckets, sum_value=entry.total_s)
        yield responses
        yield latency
