"""ServerStats counters and the Prometheus collector that reads them at scrape time."""

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tunnel_server.metrics import build_metrics_registry
from tunnel_server.stats import ProxyCounters, ServerStats
from tunnel_server.web.view import ClientInfo, ProxyInfo


class FakeView:
    """A ServerView over fixed lists."""

    def __init__(self, stats: ServerStats) -> None:
        self._clients = [ClientInfo("c1", "10.0.0.5:40000", "0.1.0", "alice", 1.0, ("web", "ssh"))]
        self._proxies = [
            ProxyInfo(
                "web", "c1", "http", ("http://web.example.com:8080",), "online", stats.proxy("web")
            ),
            ProxyInfo("ssh", "c1", "tcp", ("tcp://0.0.0.0:6000",), "online", stats.proxy("ssh")),
            ProxyInfo("dns", "c1", "udp", ("udp://0.0.0.0:5353",), "offline", stats.proxy("dns")),
        ]

    def clients(self) -> list[ClientInfo]:
        return self._clients

    def proxies(self) -> list[ProxyInfo]:
        return self._proxies

    def kick_client(self, client_id: str) -> bool:
        return False

    def close_proxy(self, client_id: str, name: str) -> bool:
        return False


def scrape(stats: ServerStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Render the private registry and index every sample by (name, sorted labels)."""
    text = generate_latest(build_metrics_registry(stats, FakeView(stats))).decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_stats_proxy_counters_are_shared_and_survive_re_registration() -> None:
    """proxy(name) returns the same counters object each time, like frp keeps offline stats."""
    stats = ServerStats()
    counters = stats.proxy("web")
    counters.bytes_in += 100
    assert stats.proxy("web") is counters
    assert stats.get("web") is counters and stats.get("nope") is None
    stats.remove_proxy("web")
    stats.remove_proxy("web")
    assert stats.get("web") is None


def test_stats_evicts_the_oldest_proxy_at_the_bound() -> None:
    """Past max_proxies the longest-registered name goes, and the eviction is counted."""
    stats = ServerStats(max_proxies=2)
    stats.proxy("a")
    stats.proxy("b")
    stats.proxy("a")  # re-registering makes "a" young again
    stats.proxy("c")
    assert [name for name, _ in stats.items()] == ["a", "c"]
    assert stats.evicted_proxies == 1
    with pytest.raises(ValueError, match="max_proxies"):
        ServerStats(max_proxies=0)


def test_stats_totals_sum_every_proxy() -> None:
    """totals() adds up each counter across proxies."""
    stats = ServerStats()
    stats.proxy("a").bytes_in += 5
    stats.proxy("b").bytes_in += 7
    stats.proxy("b").connections_active += 2
    total = stats.totals()
    assert (total.bytes_in, total.connections_active, total.bytes_out) == (12, 2, 0)
    assert "bytes_in=12" in repr(total)


def test_stats_collector_exports_every_metric() -> None:
    """A scrape reflects the counters at that moment, with the documented names and labels."""
    stats = ServerStats()
    view_counters: ProxyCounters = stats.proxy("web")
    view_counters.bytes_in += 1000
    view_counters.bytes_out += 2500
    view_counters.connections_total += 3
    view_counters.connections_active += 1
    stats.proxy("dns").dropped_datagrams += 4
    stats.proxy("dns").refused_flows += 2
    stats.auth_failures += 2
    stats.sessions_total += 5
    samples = scrape(stats)
    assert samples[("tunnelkit_clients", ())] == 1
    assert samples[("tunnelkit_proxies", (("type", "http"),))] == 1
    assert samples[("tunnelkit_proxies", (("type", "tcp"),))] == 1
    assert samples[("tunnelkit_proxies", (("type", "udp"),))] == 0  # offline is not counted
    assert samples[("tunnelkit_proxies", (("type", "https"),))] == 0
    assert samples[("tunnelkit_proxy_connections_active", (("proxy", "web"),))] == 1
    assert samples[("tunnelkit_proxy_connections_total", (("proxy", "web"),))] == 3
    web_in = ("tunnelkit_proxy_bytes_total", (("direction", "in"), ("proxy", "web")))
    web_out = ("tunnelkit_proxy_bytes_total", (("direction", "out"), ("proxy", "web")))
    assert (samples[web_in], samples[web_out]) == (1000, 2500)
    assert samples[("tunnelkit_udp_dropped_datagrams_total", (("proxy", "dns"),))] == 4
    assert samples[("tunnelkit_proxy_refused_flows_total", (("proxy", "dns"),))] == 2
    assert samples[("tunnelkit_auth_failures_total", ())] == 2
    assert samples[("tunnelkit_sessions_total", ())] == 5


def test_stats_collector_reads_live_values_and_stays_off_the_global_registry() -> None:
    """Each scrape sees new increments; nothing is registered globally."""
    stats = ServerStats()
    before = scrape(stats)
    stats.proxy("ssh").bytes_out += 42
    after = scrape(stats)
    key = ("tunnelkit_proxy_bytes_total", (("direction", "out"), ("proxy", "ssh")))
    assert (before[key], after[key]) == (0, 42)
    assert "tunnelkit_clients" not in generate_latest(REGISTRY).decode()
