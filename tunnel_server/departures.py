"""Proxies that went away or never came: why, and when their metric series expire.

The dashboard shows an offline proxy with the reason it closed ("session ended", "daily
traffic quota ... reached") and a refused one with the reason it was refused, with its client
and type, instead of a blank row. Both tables are bounded; the oldest entry goes first.

Counters of a departed proxy stay in ServerStats (a short reconnect continues them) until it
has been gone DEPARTED_SERIES_TTL_S; then `expire` drops them, so /metrics does not keep a
series for every proxy that ever existed.
"""

from __future__ import annotations

from typing import Final

from .stats import ServerStats

DEPARTED_SERIES_TTL_S: Final = 3600.0  # an offline proxy's counters and row, then gone
MAX_REFUSALS: Final = 1024  # refused proxies remembered for the dashboard; oldest evicted
MAX_REASONS: Final = 65_536  # closing reasons kept (one per departed proxy); oldest evicted


class Departures:
    def __init__(self, ttl_s: float = DEPARTED_SERIES_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._closed: dict[str, tuple[float, str]] = {}  # name -> (when, reason)
        self._refused: dict[str, tuple[str, str, str]] = {}  # name -> (client, type, reason)

    def started(self, name: str) -> None:
        self._closed.pop(name, None)
        self._refused.pop(name, None)

    def closed(self, name: str, reason: str, now: float) -> None:
        self._closed.pop(name, None)
        self._closed[name] = (now, reason)
        if len(self._closed) > MAX_REASONS:
            del self._closed[next(iter(self._closed))]

    def refused(self, name: str, client_id: str, proxy_type: str, reason: str) -> None:
        self._refused.pop(name, None)
        self._refused[name] = (client_id, proxy_type, reason)
        if len(self._refused) > MAX_REFUSALS:
            del self._refused[next(iter(self._refused))]

    def reason(self, name: str) -> str:
        entry = self._closed.get(name)
        return f"closed: {entry[1]}" if entry else ""

    def refusal(self, name: str) -> tuple[str, str, str] | None:
        return self._refused.get(name)

    def refusals(self) -> list[tuple[str, tuple[str, str, str]]]:
        return list(self._refused.items())

    def expire(self, stats: ServerStats, online: set[str], now: float) -> list[str]:
        """Drop the counters of proxies gone longer than the TTL; returns their names."""
        expired = [
            name
            for name, (when, _) in self._closed.items()
            if now - when >= self.ttl_s and name not in online
        ]
        for name in expired:
            del self._closed[name]
            stats.remove_proxy(name)
        return expired
