"""Health verdicts: maxFailed failures in a row take a proxy down; one success brings it up."""

from __future__ import annotations

from tunnel_client.health import HealthChecker, HealthMonitor
from tunnel_client.proxyoptions import HealthCheckConfig


def checker(max_failed: int, changes: list[tuple[str, bool, str]]) -> HealthChecker:
    config = HealthCheckConfig(type="tcp", max_failed=max_failed)
    return HealthChecker("p", "127.0.0.1", 1, config, lambda *c: changes.append(c))


def test_health_verdict_needs_max_failed_failures_in_a_row() -> None:
    """Failures below maxFailed, broken by a success, never take the proxy down."""
    changes: list[tuple[str, bool, str]] = []
    check = checker(3, changes)
    check._record("")
    assert changes == [("p", True, "health check passed")]
    for error in ("refused", "refused", "", "refused", "refused"):
        check._record(error)
    assert len(changes) == 1 and check.state.failures == 2
    check._record("timed out")
    assert changes[-1] == ("p", False, "health check failed 3 times: timed out")
    check._record("timed out")  # still down: no second notice
    assert len(changes) == 2
    check._record("")
    assert changes[-1][1] is True and check.state.failures == 0


def test_health_monitor_allows_unchecked_proxies_and_waits_for_checked_ones() -> None:
    """A proxy without a check is always allowed; one with a check waits for a pass."""
    monitor = HealthMonitor(lambda *c: None)
    monitor.add("plain", "127.0.0.1", 1, None)
    monitor.add("checked", "127.0.0.1", 1, HealthCheckConfig(type="tcp"))
    assert monitor.allows("plain") and not monitor.allows("checked")
    monitor.checkers["checked"]._record("")
    assert monitor.allows("checked")
    monitor.remove("checked")
    assert monitor.allows("checked") and monitor.state("checked") is None
