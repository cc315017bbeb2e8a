"""Bandwidth limits: frp's `"1MB"`/`"512KB"` quantities, a token bucket and a rate meter.

All three are pure: they take `now` (seconds, monotonic) from the caller, so the client's
per-proxy limits and the server's per-user quotas share them and tests drive them with a
fake clock. `tunnel_common.throttle` applies a bucket to sockets through backpressure.

The bucket lets a caller take a whole chunk whenever the balance is positive and go into
debt for the rest; the debt is repaid before the next take. Over any period T the bytes
taken are at most rate * T + burst + one chunk, and a chunk larger than the burst never
stalls forever.
"""

from __future__ import annotations

import re
from typing import Final

KB: Final = 1024  # frp's units are binary: "1MB" is 1,048,576 bytes per second
MB: Final = 1024 * KB
_QUANTITY: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB)\s*")
MIN_RATE_BYTES_PER_S: Final = 1 * KB
MAX_RATE_BYTES_PER_S: Final = 100 * 1024 * MB  # 100 GB/s: effectively unlimited
BURST_S: Final = 0.1  # an idle bucket fills up to this many seconds' worth of bytes
MIN_BURST_BYTES: Final = 16 * KB
METER_SLOT_S: Final = 0.5  # the rate meter counts bytes in slots this long...
METER_SLOTS: Final = 4  # ...and reports the average over this many full slots (2 s)


def parse_bandwidth(text: str) -> int:
    """Bytes per second for frp's quantity syntax ("1MB", "512KB", "1.5MB").

    Raises ValueError with a reason suitable for a config error.
    """
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f'must be a number with the unit KB or MB (e.g. "1MB"), got "{text}"')
    value = float(match.group(1)) * (KB if match.group(2) == "KB" else MB)
    if not MIN_RATE_BYTES_PER_S <= value <= MAX_RATE_BYTES_PER_S:
        raise ValueError(f'must be from 1KB to 100GB per second, got "{text}"')
    return int(value)


def format_bandwidth(rate: float) -> str:
    """A rate for humans: "1.0MB/s", "512KB/s", "300B/s"."""
    if rate >= MB:
        return f"{rate / MB:.1f}MB/s"
    if rate >= KB:
        return f"{rate / KB:.0f}KB/s"
    return f"{rate:.0f}B/s"


class TokenBucket:
    """`rate` bytes per second, with bursts of at most `burst` bytes after idling."""

    __slots__ = ("_balance", "_last", "burst", "rate")

    def __init__(self, rate: int, now: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(MIN_BURST_BYTES, int(rate * BURST_S))
        self._balance = float(self.burst)
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._balance = min(float(self.burst), self._balance + (now - self._last) * self.rate)
            self._last = now

    def set_rate(self, rate: int, now: float) -> None:
        """Change the rate (and the default burst with it); a debt stays owed."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._refill(now)
        self.rate = rate
        self.burst = max(MIN_BURST_BYTES, int(rate * BURST_S))
        self._balance = min(self._balance, float(self.burst))

    def ready(self, now: float) -> bool:
        """True if a take now would not wait (the balance is positive)."""
        self._refill(now)
        return self._balance > 0

    def take(self, nbytes: int, now: float) -> float:
        """Spend `nbytes`; returns how long to wait before the next take (0 = go on)."""
        self._refill(now)
        self._balance -= nbytes
        return self.delay(now)

    def delay(self, now: float) -> float:
        """Seconds until the balance is positive again."""
        self._refill(now)
        return 0.0 if self._balance > 0 else (-self._balance + 1) / self.rate


class RateMeter:
    """Bytes per second over the last few fixed slots (bounded: METER_SLOTS + 1 counters)."""

    __slots__ = ("_slots", "_start", "total")

    def __init__(self, now: float) -> None:
        self._start = now - METER_SLOTS * METER_SLOT_S  # slot 0 of `_slots`; the last fills now
        self._slots = [0] * (METER_SLOTS + 1)  # the last one is the slot still filling
        self.total = 0

    def _advance(self, now: float) -> None:
        elapsed = int((now - self._start) // METER_SLOT_S) - METER_SLOTS
        if elapsed <= 0:
            return
        if elapsed > METER_SLOTS:
            self._slots = [0] * (METER_SLOTS + 1)
        else:
            self._slots = self._slots[elapsed:] + [0] * elapsed
        self._start += elapsed * METER_SLOT_S

    def record(self, nbytes: int, now: float) -> None:
        self._advance(now)
        self._slots[-1] += nbytes
        self.total += nbytes

    def rate(self, now: float) -> float:
        """Average bytes per second over the last METER_SLOTS completed slots."""
        self._advance(now)
        return sum(self._slots[:-1]) / (METER_SLOTS * METER_SLOT_S)
