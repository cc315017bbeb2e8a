"""Per-user series for /metrics: each user's bytes, connections and sessions, and their expiry.

The hot path counts per proxy only (stats.py); a user's totals are the sum of what its proxies
relayed, moved here by `sample` (every USER_POLL_INTERVAL_S and at each scrape) as the growth
of each proxy's counters since the last reading. A proxy that closed is read once more (its
counters outlive it in ServerStats) and then forgotten, so no byte is counted twice or lost.

Users are named as their sessions are: a store user, frp's `user` of a shared-token login, or
"" for logins without one. A user with no session left keeps its series for
departedMetricsTTL seconds (the same TTL as departed proxies), then they go. The table is
bounded by MAX_TRACKED_USERS; over it the entry seen longest ago is evicted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .server import TunnelServer

MAX_TRACKED_USERS: Final = 65_536


@dataclass(slots=True)
class UserTotals:
    bytes_in: int = 0  # towards the users' local services
    bytes_out: int = 0
    connections_total: int = 0
    sessions_total: int = 0
    gone_since: float | None = None  # when its last session ended (None while online)


@dataclass(slots=True)
class _Reading:
    user: str
    bytes_in: int
    bytes_out: int
    connections_total: int


def _growth(now: int, last: int) -> int:
    return now - last if now >= last else now  # counters that restarted count from zero


class UserMetrics:
    def __init__(self, server: TunnelServer) -> None:
        self._server = server
        self._totals: dict[str, UserTotals] = {}
        self._readings: dict[str, _Reading] = {}  # proxy name -> its last reading

    def _entry(self, user: str) -> UserTotals:
        totals = self._totals.get(user)
        if totals is None:
            if len(self._totals) >= MAX_TRACKED_USERS:
                del self._totals[next(iter(self._totals))]
            totals = self._totals[user] = UserTotals()
        return totals

    def session_started(self, user: str) -> None:
        self._entry(user).sessions_total += 1

    def get(self, user: str) -> UserTotals | None:
        return self._totals.get(user)

    def sample(self) -> None:
        """Add what each proxy relayed since the last reading to its user's totals."""
        server = self._server
        online = {entry.name: entry.owner.user for entry in server.proxies.entries()}
        departed = [name for name in self._readings if name not in online]
        for name, user in [*online.items(), *((n, self._readings[n].user) for n in departed)]:
            counters = server.stats.get(name)
            if counters is None:
                continue
            last = self._readings.get(name)
            if last is None or last.user != user:
                last = _Reading(user, 0, 0, 0)
            totals = self._entry(user)
            totals.bytes_in += _growth(counters.bytes_in, last.bytes_in)
            totals.bytes_out += _growth(counters.bytes_out, last.bytes_out)
            totals.connections_total += _growth(counters.connections_total, last.connections_total)
            self._readings[name] = _Reading(
                user, counters.bytes_in, counters.bytes_out, counters.connections_total
            )
        for name in departed:
            del self._readings[name]

    def expire(self, now: float, ttl_s: float) -> list[str]:
        """Forget users without a session for `ttl_s` seconds; returns their names."""
        online = {session.user for session in self._server.sessions.values()}
        expired = []
        for user, totals in self._totals.items():
            if user in online:
                totals.gone_since = None
            elif totals.gone_since is None:
                totals.gone_since = now
            elif now - totals.gone_since >= ttl_s:
                expired.append(user)
        for user in expired:
            del self._totals[user]
        return expired

    def collect(self) -> Iterator[Metric]:
        """The per-user families (a prometheus_client collector, read at scrape time)."""
        # Imported here: only a /metrics scrape needs prometheus_client (about 5 MiB).
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        self.sample()
        server = self._server
        sessions: dict[str, int] = {}
        active: dict[str, int] = {}
        for session in server.sessions.values():
            sessions[session.user] = sessions.get(session.user, 0) + 1
        for entry in server.proxies.entries():
            user = entry.owner.user
            active[user] = active.get(user, 0) + entry.counters.connections_active
        traffic = CounterMetricFamily(
            "tunnelkit_user_bytes_total",
            "Bytes relayed by all of a user's proxies; direction 'in' is towards its services.",
            labels=["user", "direction"],
        )
        connections = CounterMetricFamily(
            "tunnelkit_user_connections_total",
            "Visitor connections (and UDP flows) accepted by a user's proxies.",
            labels=["user"],
        )
        open_now = GaugeMetricFamily(
            "tunnelkit_user_connections_active",
            "Visitor connections open now through a user's proxies.",
            labels=["user"],
        )
        logins = CounterMetricFamily(
            "tunnelkit_user_sessions_total", "Client sessions a user logged in.", labels=["user"]
        )
        online = GaugeMetricFamily(
            "tunnelkit_user_sessions", "Client sessions of a user logged in now.", labels=["user"]
        )
        for user, totals in sorted(self._totals.items()):
            traffic.add_metric([user, "in"], totals.bytes_in)
            traffic.add_metric([user, "out"], totals.bytes_out)
            connections.add_metric([user], totals.connections_total)
            open_now.add_metric([user], active.get(user, 0))
            logins.add_metric([user], totals.sessions_total)
            online.add_metric([user], sessions.get(user, 0))
        yield from (traffic, connections, open_now, logins, online)
        limit = GaugeMetricFamily(
            "tunnelkit_user_bandwidth_limit_bytes_per_second",
            "A user's bandwidth quota, over all its proxies, both directions.",
            labels=["user"],
        )
        rate = GaugeMetricFamily(
            "tunnelkit_user_bandwidth_rate_bytes_per_second",
            "Bytes per second through a user's quota bucket, both directions, last 2 s.",
            labels=["user"],
        )
        for user, throttle in server.users.throttles.items():
            limit.add_metric([user], throttle.rate)
            rate.add_metric([user], throttle.current_rate())
        yield from (limit, rate)
