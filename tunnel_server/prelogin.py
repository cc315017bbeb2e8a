"""The pending-login table: every connection on bindPort that has not logged in yet.

A connection takes a slot when it is accepted, before its TLS handshake, and gives it back on
every path out: handshake failure or timeout, reset, garbage, login failure, login success.
The owner calls `release()` in a `finally`, so no path can leak a slot.

Limits (both evict, never refuse the newcomer outright, so a flood of idle sockets can only
delay a good client, never lock it out):
- per source address (`max_per_ip`): a newcomer from an address at its limit evicts that
  address's oldest pending connection, so one address only ever competes with itself;
- global (`max_total`): a newcomer evicts the oldest pending connection of any address.

An entry younger than `min_age_s` is never evicted: a burst of real clients (a fleet
restarting) would otherwise evict each other before any handshake finished. When every entry
that could make room is that young, the newcomer is told to retry (`admit` returns None; the
server answers "busy, retry after N ms").

Pure bookkeeping: no asyncio, no sockets; the caller passes `now` and an `evict` callback.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .stats import LimitCounters

DEFAULT_MAX_PENDING_LOGINS: Final = 256  # connections, whole server (maxPendingLogins)
DEFAULT_MAX_PENDING_PER_IP: Final = 64  # per source address (maxPendingLoginsPerIP)
# A pending connection younger than this is never evicted (seconds); see the module docstring.
EVICT_MIN_AGE_S: Final = 0.5


@dataclass(eq=False, slots=True)
class PendingSlot:
    """One accepted connection that has not logged in: where from, since when, how to end it."""

    ip: str
    since: float
    evict: Callable[[], None]
    key: int = 0
    released: bool = field(default=False)


class PendingLogins:
    """Slots for connections that have not logged in, fair per address, oldest evicted first."""

    def __init__(
        self,
        max_total: int = DEFAULT_MAX_PENDING_LOGINS,
        max_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
        min_age_s: float = EVICT_MIN_AGE_S,
        counters: LimitCounters | None = None,
    ) -> None:
        if not 1 <= max_per_ip <= max_total:
            raise ValueError("need 1 <= max_per_ip <= max_total")
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.min_age_s = min_age_s
        self._all: OrderedDict[int, PendingSlot] = OrderedDict()  # oldest first
        self._by_ip: dict[str, OrderedDict[int, PendingSlot]] = {}
        self._next_key = 0
        self.counters = counters or LimitCounters()  # shared with /metrics

    def __len__(self) -> int:
        return len(self._all)

    def count(self, ip: str) -> int:
        return len(self._by_ip.get(ip, ()))

    def admit(self, ip: str, now: float, evict: Callable[[], None]) -> PendingSlot | None:
        """Take a slot for a new connection from `ip`, evicting the oldest if needed.

        Returns None (busy: ask the peer to retry) when room could only be made by evicting a
        connection younger than `min_age_s`. The evicted entry's `evict()` is called after it
        has been removed, so it may call `release()` again harmlessly.
        """
        mine = self._by_ip.get(ip)
        if mine is not None and len(mine) >= self.max_per_ip:
            victim = next(iter(mine.values()))
        elif len(self._all) >= self.max_total:
            victim = next(iter(self._all.values()))
        else:
            victim = None
        if victim is not None:
            if now - victim.since < self.min_age_s:
                return None
            self.release(victim)
            self.counters.pending_evicted += 1
            victim.evict()
        slot = PendingSlot(ip, now, evict, self._next_key)
        self._next_key += 1
        self._all[slot.key] = slot
        self._by_ip.setdefault(ip, OrderedDict())[slot.key] = slot
        self.counters.pending_logins = len(self._all)
        return slot

    def release(self, slot: PendingSlot) -> None:
        """Give the slot back (idempotent)."""
        if slot.released:
            return
        slot.released = True
        del self._all[slot.key]
        mine = self._by_ip[slot.ip]
        del mine[slot.key]
        if not mine:
            del self._by_ip[slot.ip]
        self.counters.pending_logins = len(self._all)

    def retry_after_ms(self) -> int:
        """How long a busy peer should wait: long enough for the oldest entry to be evictable."""
        if not self._all:
            return 0
        return max(100, int(self.min_age_s * 1000))
