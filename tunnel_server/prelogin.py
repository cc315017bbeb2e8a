"""The pending-login table: every connection on bindPort that has not logged in yet.

A connection takes a slot when it is accepted, before its TLS handshake, and gives it back on
every path out: handshake failure or timeout, reset, garbage, login failure, login success.
The owner calls `release()` in a `finally`, so no path can leak a slot.

Limits (both evict, never refuse the newcomer outright, so a flood of idle sockets can only
delay a good client, never lock it out):
- per source address (`max_per_ip`): a newcomer from an address at its limit evicts one of
  that address's pending connections, so one address only ever competes with itself;
- global (`max_total`): a newcomer evicts one pending connection of any address.

The one evicted is the most *stalled*: the one whose last step (accepted, TLS handshake done,
challenge received) is oldest, and only if that step is at least `stall_s` old. A real client
takes its next step within milliseconds, so idle sockets and stalled handshakes are evicted
first, and a burst of real logins (a fleet restarting) never evicts itself: when every
connection that could make room is still making progress, the newcomer is told to retry
(`admit` returns None; the server answers "busy, retry after N ms"). To hold a slot an
attacker must keep completing steps, each of which costs it a TLS handshake or a round trip.

Pure bookkeeping: no asyncio, no sockets; the caller passes `now` and an `evict` callback.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .stats import LimitCounters

DEFAULT_MAX_PENDING_LOGINS: Final = 256  # connections, whole server (maxPendingLogins)
# Per source address (maxPendingLoginsPerIP). It also bounds how many logins from one place
# are in flight at once: a fleet behind one address gets through faster with 64 handshakes in
# flight than with hundreds interleaved (each slower than every deadline). Its overflow is
# answered "busy, retry after N ms".
DEFAULT_MAX_PENDING_PER_IP: Final = 64
# A pending connection whose last step is younger than this is never evicted (seconds).
STALL_S: Final = 1.0


@dataclass(eq=False, slots=True)
class PendingSlot:
    """One accepted connection that has not logged in: where from, since when, how to end it."""

    ip: str
    since: float  # accepted at
    evict: Callable[[], None]
    key: int = 0
    released: bool = field(default=False)
    progress: float = 0.0  # time of its last step (accepted, TLS done, challenge received)


class PendingLogins:
    """Slots for connections that have not logged in, fair per address, oldest evicted first."""

    def __init__(
        self,
        max_total: int = DEFAULT_MAX_PENDING_LOGINS,
        max_per_ip: int = DEFAULT_MAX_PENDING_PER_IP,
        stall_s: float = STALL_S,
        counters: LimitCounters | None = None,
    ) -> None:
        if not 1 <= max_per_ip <= max_total:
            raise ValueError("need 1 <= max_per_ip <= max_total")
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.stall_s = stall_s
        self._all: OrderedDict[int, PendingSlot] = OrderedDict()  # oldest first
        self._by_ip: dict[str, OrderedDict[int, PendingSlot]] = {}
        self._next_key = 0
        self.counters = counters or LimitCounters()  # shared with /metrics
        # Called with the address whenever a slot is given back (the listener resumes).
        self.on_release: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._all)

    def count(self, ip: str) -> int:
        return len(self._by_ip.get(ip, ()))

    def admit(self, ip: str, now: float, evict: Callable[[], None]) -> PendingSlot | None:
        """Take a slot for a new connection from `ip`, evicting the most stalled if needed.

        Returns None (busy: ask the peer to retry) when room could only be made by evicting a
        connection that took a step less than `stall_s` ago. The evicted entry's `evict()` is
        called after it has been removed, so it may call `release()` again harmlessly.
        """
        mine = self._by_ip.get(ip)
        if mine is not None and len(mine) >= self.max_per_ip:
            candidates = mine.values()
        elif len(self._all) >= self.max_total:
            candidates = self._all.values()
        else:
            candidates = None
        if candidates is not None:
            # At most max_total entries: a linear scan at the limit is cheap enough.
            victim = min(candidates, key=lambda slot: slot.progress)
            if now - victim.progress < self.stall_s:
                return None
            self.release(victim)
            self.counters.pending_evicted += 1
            victim.evict()
        slot = PendingSlot(ip, now, evict, self._next_key, progress=now)
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
        if self.on_release is not None:
            self.on_release(slot.ip)

    def global_wait_s(self, now: float) -> float:
        """0 if a newcomer could be admitted globally now (room, or a stalled entry to evict);
        else how long until the least-progressed entry stalls. The listener stops accepting
        for that long (or until a slot comes back): waiting connections stay in the kernel's
        accept queue, which costs nothing, instead of being answered and retried."""
        if len(self._all) < self.max_total:
            return 0.0
        oldest = min(slot.progress for slot in self._all.values())
        return max(0.0, oldest + self.stall_s - now)

    def progressed(self, slot: PendingSlot, now: float) -> None:
        """The connection took a step of the login: it is not stalled."""
        slot.progress = now

    def retry_after_ms(self) -> int:
        """How long a busy peer should wait: about how long a stalled entry takes to show."""
        return max(100, int(self.stall_s * 1000))
