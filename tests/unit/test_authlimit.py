"""Per-source failed-login limiter."""

import pytest

from tunnel_server.authlimit import FailureLimiter, source_key


def test_failure_limiter_blocks_after_max_failures() -> None:
    """A source is blocked once it reaches max_failures inside the window."""
    limiter = FailureLimiter(max_failures=3, window_seconds=60.0)
    for now in (0.0, 1.0):
        limiter.record_failure("10.0.0.1", now)
        assert not limiter.is_blocked("10.0.0.1", now)
    limiter.record_failure("10.0.0.1", 2.0)
    assert limiter.is_blocked("10.0.0.1", 2.0)
    assert not limiter.is_blocked("10.0.0.2", 2.0)


def test_failure_limiter_unblocks_when_oldest_failure_leaves_window() -> None:
    """The block lifts when the oldest counted failure is window_seconds old."""
    limiter = FailureLimiter(max_failures=2, window_seconds=10.0)
    limiter.record_failure("10.0.0.1", 0.0)
    limiter.record_failure("10.0.0.1", 5.0)
    assert limiter.is_blocked("10.0.0.1", 9.9)
    assert not limiter.is_blocked("10.0.0.1", 10.0)
    # One more failure now: the one at 5.0 is still inside the window, so blocked again.
    limiter.record_failure("10.0.0.1", 10.0)
    assert limiter.is_blocked("10.0.0.1", 10.0)


def test_failure_limiter_spread_out_failures_never_block() -> None:
    """Failures further apart than the window never add up to a block."""
    limiter = FailureLimiter(max_failures=2, window_seconds=10.0)
    for now in range(0, 100, 11):
        limiter.record_failure("10.0.0.1", float(now))
        assert not limiter.is_blocked("10.0.0.1", float(now))


def test_failure_limiter_success_clears_record() -> None:
    """A successful login forgets the source's failures."""
    limiter = FailureLimiter(max_failures=2, window_seconds=60.0)
    limiter.record_failure("10.0.0.1", 0.0)
    limiter.record_failure("10.0.0.1", 1.0)
    limiter.record_success("10.0.0.1")
    assert not limiter.is_blocked("10.0.0.1", 1.0)
    assert len(limiter) == 0
    limiter.record_success("10.9.9.9")  # unknown sources are fine


def test_failure_limiter_table_evicts_oldest_when_full() -> None:
    """When the table is full, the source with the stalest failure is forgotten."""
    limiter = FailureLimiter(max_failures=1, window_seconds=100.0, max_tracked_sources=2)
    limiter.record_failure("10.0.0.1", 0.0)
    limiter.record_failure("10.0.0.2", 1.0)
    limiter.record_failure("10.0.0.1", 2.0)  # refreshes .1, so .2 is now the stalest
    limiter.record_failure("10.0.0.3", 3.0)
    assert len(limiter) == 2
    assert limiter.is_blocked("10.0.0.1", 3.0)
    assert not limiter.is_blocked("10.0.0.2", 3.0)
    assert limiter.is_blocked("10.0.0.3", 3.0)


def test_failure_limiter_expired_entries_are_dropped() -> None:
    """Sources whose failures all left the window stop taking table space."""
    limiter = FailureLimiter(max_failures=5, window_seconds=10.0)
    for i in range(100):
        limiter.record_failure(f"10.0.1.{i}", 0.0)
    limiter.record_failure("10.0.0.1", 10.0)
    assert len(limiter) == 1


def test_failure_limiter_groups_ipv6_by_64() -> None:
    """Addresses in one IPv6 /64 share a budget; other /64s do not."""
    limiter = FailureLimiter(max_failures=2, window_seconds=60.0)
    limiter.record_failure("2001:db8:1:2::1", 0.0)
    limiter.record_failure("2001:db8:1:2:ffff::9", 0.0)
    assert limiter.is_blocked("2001:db8:1:2::77", 0.0)
    assert not limiter.is_blocked("2001:db8:1:3::1", 0.0)


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_source_key_normalises_addresses(ip: str, key: str) -> None:
    """IPv4 counts alone, mapped IPv4 as IPv4, IPv6 by /64, other strings verbatim."""
    assert source_key(ip) == key


@pytest.mark.parametrize(
    "kwargs",
    [{"max_failures": 0}, {"window_seconds": 0.0}, {"max_tracked_sources": 0}],
)
def test_failure_limiter_rejects_nonsense_limits(kwargs: dict[str, float]) -> None:
    """Limits that could never work raise ValueError."""
    with pytest.raises(ValueError):
        FailureLimiter(**kwargs)  # type: ignore[arg-type]
