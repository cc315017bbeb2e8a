"""The one home of the server's proxies: name -> proxy, its owner session, status, counters.

`ProxyManager` is the registry every part of the server asks: a session adds the proxies it
started and removes them when they close; the dashboard, /metrics, the user store's quotas,
reload and the name-ownership check read it. Proxy names are global on a server (a user prefix
keeps teams apart, see ServerSession.qualified), so one name has at most one live entry.

Departed proxies keep their counters in ServerStats (a short reconnect continues them) and a
row here (who owned them, which kind) until `Departures` expires them; refused ones are
remembered by `Departures` alone. Nothing here does I/O: a proxy is started and closed by its
session, and the manager only records the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from protocol.messages import NewProxy

from .departures import Departures
from .proxies.base import ServerProxy
from .stats import ProxyCounters, ServerStats

if TYPE_CHECKING:
    from .session import ServerSession

ProxyState = Literal["online", "offline", "refused"]


@dataclass(slots=True, eq=False)
class ProxyEntry:
    """One live proxy: what it is, who owns it, what it asked for, and its counters."""

    name: str  # qualified (user prefix), unique on the server
    local_name: str  # as its client knows it
    proxy: ServerProxy
    owner: ServerSession
    request: NewProxy
    counters: ProxyCounters
    since: float = field(default_factory=time.time)

    @property
    def client_id(self) -> str:
        return self.owner.client_id

    @property
    def type(self) -> str:
        return str(self.proxy.type)


@dataclass(frozen=True, slots=True)
class DepartedRow:
    """An offline or refused proxy as the dashboard shows it."""

    name: str
    client_id: str
    type: str
    state: ProxyState
    counters: ProxyCounters
    reason: str


class ProxyManager:
    def __init__(self, stats: ServerStats, departures: Departures) -> None:
        self.stats = stats
        self.departures = departures
        self._entries: dict[str, ProxyEntry] = {}
        self._by_session: dict[ServerSession, dict[str, ProxyEntry]] = {}
        # name -> (client id, type) of departed proxies whose counters the stats still hold,
        # for their offline rows; bounded by the stats' own bound (pruned in `add`).
        self._departed: dict[str, tuple[str, str]] = {}

    # -- the live table -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> ProxyEntry | None:
        return self._entries.get(name)

    def owner(self, name: str) -> ServerSession | None:
        entry = self._entries.get(name)
        return entry.owner if entry is not None else None

    def entries(self) -> Iterator[ProxyEntry]:
        return iter(list(self._entries.values()))

    def of_session(self, session: ServerSession) -> dict[str, ProxyEntry]:
        """The session's own entries by name (a live view: do not mutate)."""
        return self._by_session.get(session, {})

    def counters(self, name: str) -> ProxyCounters:
        """The counters a (new) proxy of this name adds to: a returning name continues its
        old ones, as frp's dashboard does."""
        return self.stats.proxy(name)

    def add(
        self, session: ServerSession, name: str, proxy: ServerProxy, request: NewProxy
    ) -> ProxyEntry:
        if name in self._entries:
            raise ValueError(f"proxy {name!r} is already registered")
        entry = ProxyEntry(name, request.name, proxy, session, request, self.counters(name))
        self._entries[name] = entry
        self._by_session.setdefault(session, {})[name] = entry
        self._departed.pop(name, None)
        self.departures.started(name)
        if len(self._departed) > self.stats.max_proxies:
            for stale in [n for n in self._departed if self.stats.get(n) is None]:
                del self._departed[stale]
        return entry

    def remove(self, name: str, reason: str) -> ProxyEntry | None:
        """Forget a live proxy (its session closes it); it becomes an offline row."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return None
        owned = self._by_session.get(entry.owner)
        if owned is not None:
            owned.pop(name, None)
            if not owned:
                del self._by_session[entry.owner]
        self._departed[name] = (entry.client_id, entry.type)
        self.departures.closed(name, reason, time.time())
        return entry

    # -- departed and refused rows --------------------------------------------------------------
    def departed(self) -> list[DepartedRow]:
        """Every proxy with counters but no live entry, then refusals without counters."""
        rows: list[DepartedRow] = []
        for name, counters in self.stats.items():
            if name in self._entries:
                continue
            refusal = self.departures.refusal(name)
            if refusal is not None:  # refused before it ever served (its counters exist)
                client_id, proxy_type, reason = refusal
                rows.append(DepartedRow(name, client_id, proxy_type, "refused", counters, reason))
                continue
            client_id, proxy_type = self._departed.get(name, ("", ""))
            rows.append(
                DepartedRow(
                    name, client_id, proxy_type, "offline", counters, self.departures.reason(name)
                )
            )
        for name, (client_id, proxy_type, reason) in self.departures.refusals():
            if name not in self._entries and self.stats.get(name) is None:
                rows.append(
                    DepartedRow(name, client_id, proxy_type, "refused", ProxyCounters(), reason)
                )
        return rows

    def expire_departed(self, now: float) -> list[str]:
        """Forget proxies gone longer than departedMetricsTTL (their series and rows)."""
        expired = self.departures.expire(self.stats, set(self._entries), now)
        for name in expired:
            self._departed.pop(name, None)
        return expired
