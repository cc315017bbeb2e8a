"""The pure bandwidth pieces: frp's quantities, the token bucket and the rate meter."""

from __future__ import annotations

import pytest

from tunnel_common.bandwidth import (
    KB,
    MB,
    METER_SLOT_S,
    RateMeter,
    TokenBucket,
    format_bandwidth,
    parse_bandwidth,
)


@pytest.mark.parametrize(
    ("text", "rate"), [("1MB", MB), ("512KB", 512 * KB), ("1.5MB", 3 * MB // 2), (" 2 MB ", 2 * MB)]
)
def test_bandwidth_quantity_parses_frp_units(text: str, rate: int) -> None:
    """frp's KB and MB are binary units of bytes per second."""
    assert parse_bandwidth(text) == rate


@pytest.mark.parametrize("text", ["1", "1mb", "1GB", "-1MB", "0KB", "MB", "1e3KB", ""])
def test_bandwidth_quantity_rejects_other_forms(text: str) -> None:
    """Anything but a positive number with KB or MB is refused with a reason."""
    with pytest.raises(ValueError, match="KB"):
        parse_bandwidth(text)


def test_bandwidth_format_is_readable() -> None:
    """Rates print in the largest unit that fits."""
    assert format_bandwidth(MB) == "1.0MB/s"
    assert format_bandwidth(512 * KB) == "512KB/s"
    assert format_bandwidth(10) == "10B/s"


def test_token_bucket_spends_its_burst_then_waits() -> None:
    """A full bucket passes its burst at once; debt beyond it costs debt / rate seconds."""
    bucket = TokenBucket(1000, now=0.0, burst=500)
    assert bucket.take(500, 0.0) > 0  # balance 0: the next take must wait
    assert not bucket.ready(0.0)
    assert bucket.ready(0.01)
    delay = bucket.take(2000, 0.01)  # 10 refilled, 1990 of debt
    assert delay == pytest.approx(1.991, abs=0.002)
    assert not bucket.ready(1.9)


def test_token_bucket_rate_holds_over_a_long_run() -> None:
    """Taking 64 KiB chunks whenever allowed passes rate * T + burst + one chunk at most."""
    rate = 1 * MB
    bucket = TokenBucket(rate, now=0.0)
    now, sent = 0.0, 0
    while now < 10.0:
        sent += 64 * KB
        now += bucket.take(64 * KB, now)
    assert rate * now <= sent <= rate * now + bucket.burst + 64 * KB


def test_token_bucket_idle_refill_is_capped_at_the_burst() -> None:
    """A long idle period does not bank more than one burst."""
    bucket = TokenBucket(1000, now=0.0, burst=100)
    bucket.take(100, 0.0)
    assert bucket.take(100, 3600.0) > 0  # refilled only to 100: spent again at once


def test_rate_meter_averages_the_last_slots() -> None:
    """The meter reports bytes per second over its full slots and forgets old traffic."""
    meter = RateMeter(now=0.0)
    for step in range(40):  # 1000 bytes every 0.05 s = 20 kB/s for 2 s
        meter.record(1000, step * 0.05)
    assert meter.rate(2.0 + METER_SLOT_S / 2) == pytest.approx(20_000, rel=0.1)
    assert meter.total == 40_000
    assert meter.rate(60.0) == 0
