"""Per-source rate limit for failed logins (pure: the caller passes `now`).

A source is blocked once it has `max_failures` failed logins within the last `window_seconds`;
it is unblocked when the oldest of those failures leaves the window. A successful login clears
the source's record.

Sources are grouped so that one attacker cannot dodge the limit by hopping addresses it owns:
an IPv4 address counts on its own (an IPv4-mapped IPv6 address counts as that IPv4 address),
while an IPv6 address counts with the rest of its /64, the usual size of one site's network.
Anything that is not an IP address is used verbatim.

Overflow policy: the table holds at most `max_tracked_sources` sources. When a new source does
not fit, the one whose last failure is oldest is forgotten (and so unblocked). An attacker who
spreads failures over more sources than that can make us forget a source early, but then each
of its sources is still limited to `max_failures` per window before eviction reaches it.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from typing import Final

IPV6_GROUP_PREFIX_BITS: Final = 64


def source_key(ip: str) -> str:
    """Return the key that `ip` is counted under (see the module docstring)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX_BITS), strict=False)
        return str(network)
    return str(address)


class FailureLimiter:
    """Counts failed logins per source within a sliding window; bounded (see module doc)."""

    def __init__(
        self,
        max_failures: int = 5,
        window_seconds: float = 60.0,
        max_tracked_sources: int = 10000,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {max_failures}")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if max_tracked_sources < 1:
            raise ValueError(f"max_tracked_sources must be at least 1, got {max_tracked_sources}")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_tracked_sources = max_tracked_sources
        # key -> times of its most recent failures (at most max_failures of them). Ordered by
        # last failure, oldest first, so both expiry and eviction work from the front.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Number of sources currently tracked."""
        return len(self._failures)

    def is_blocked(self, ip: str, now: float) -> bool:
        """Return True if `ip` has used up its failures for the current window."""
        times = self._failures.get(source_key(ip))
        if times is None or len(times) < self.max_failures:
            return False
        return now - times[0] < self.window_seconds

    def record_failure(self, ip: str, now: float) -> None:
        """Count one failed login from `ip` at time `now`."""
        self._forget_expired(now)
        key = source_key(ip)
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_tracked_sources:
                self._failures.popitem(last=False)  # overflow: forget the stalest source
            times = deque(maxlen=self.max_failures)
            self._failures[key] = times
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def record_success(self, ip: str) -> None:
        """Forget the failures of `ip` after it logged in."""
        self._failures.pop(source_key(ip), None)

    def _forget_expired(self, now: float) -> None:
        # Entries are ordered by last failure, so stop at the first one still inside the window.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if now - times[-1] < self.window_seconds:
                return
            del self._failures[key]
