"""Public port allocation: allowPorts, maxPortsPerClient and "who holds which port"."""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Final

from .config import PortRange
from .errors import ProxyHeld, ProxyRefused

# How many random ports to try when the client asks for "any port" (remotePort = 0).
PICK_ATTEMPTS: Final = 64
EPHEMERAL_START: Final = 20000
EPHEMERAL_END: Final = 60999


class PortAllocator:
    """Decides which port numbers a client may hold; the listener bind is the final word on
    whether the OS lets us have it."""

    def __init__(self, allow: tuple[PortRange, ...], max_per_client: int) -> None:
        self._allow = allow
        self._max_per_client = max_per_client
        self._held: dict[tuple[str, int], str] = {}  # (proto, port) -> client id
        self._owner: dict[tuple[str, int], str] = {}  # (proto, port) -> its client's user
        self._per_client: Counter[str] = Counter()

    def check(self, client_id: str, proto: str, port: int, user: str = "") -> None:
        """Raise ProxyRefused if `port` may not be claimed by this client (of `user`)."""
        if self._max_per_client and self._per_client[client_id] >= self._max_per_client:
            raise ProxyRefused(
                f"client already holds {self._max_per_client} ports (maxPortsPerClient)"
            )
        if port and self._allow and not any(r.start <= port <= r.end for r in self._allow):
            raise ProxyRefused(f"port {port} is not allowed by the server (allowPorts)")
        if port and (proto, port) in self._held:
            if self._owner.get((proto, port), "") != user:
                # Not a stale session of the same user that a retry would outlast: a port
                # belongs to the user holding it (#14), as a domain does (vhost/claims.py).
                raise ProxyRefused(f"port {port} is held by another user")
            raise ProxyHeld(f"port {port} is held by another session")

    def candidates(self, rng: random.Random | None = None) -> list[int]:
        """Ports to try, in order, for remotePort = 0."""
        rng = rng or random.Random()
        if not self._allow:
            return [0]  # let the OS pick
        ranges = [(r.start, r.end) for r in self._allow]
        total = sum(end - start + 1 for start, end in ranges)
        picks: list[int] = []
        for _ in range(min(PICK_ATTEMPTS, total * 2)):
            k = rng.randrange(total)
            for start, end in ranges:
                size = end - start + 1
                if k < size:
                    picks.append(start + k)
                    break
                k -= size
        return picks

    def set_rules(self, allow: tuple[PortRange, ...], max_per_client: int) -> None:
        """New allowPorts/maxPortsPerClient (a reload); ports already held stay held."""
        self._allow = allow
        self._max_per_client = max_per_client

    def is_free(self, proto: str, port: int) -> bool:
        """True if no proxy holds `port` (the bind may still fail)."""
        return (proto, port) not in self._held

    def hold(self, client_id: str, proto: str, port: int, user: str = "") -> None:
        self._held[(proto, port)] = client_id
        self._owner[(proto, port)] = user
        self._per_client[client_id] += 1

    def release(self, client_id: str, proto: str, port: int) -> None:
        self._owner.pop((proto, port), None)
        if self._held.pop((proto, port), None) is not None:
            self._per_client[client_id] -= 1
            if self._per_client[client_id] <= 0:
                del self._per_client[client_id]


async def listen_on_public_port(
    ports: PortAllocator,
    client_id: str,
    proto: str,
    requested: int,
    listen: Callable[[int], Awaitable[int]],
    user: str = "",
) -> int:
    """Claim a public port: check the rules, then try `listen(port)` on the requested port or
    on allowed candidates; returns the bound port, held for the client. ProxyRefused with the
    reason otherwise."""
    ports.check(client_id, proto, requested, user)
    last_error: OSError | None = None
    for port in [requested] if requested else ports.candidates():
        try:
            bound = await listen(port)
        except OSError as exc:
            last_error = exc
            continue
        ports.hold(client_id, proto, bound, user)
        return bound
    label = "UDP port" if proto == "udp" else "port"
    if requested and last_error is not None and last_error.errno == errno.EADDRINUSE:
        raise ProxyRefused(f"{label} {requested} is already in use on the server")
    raise ProxyRefused(f"cannot listen on a public {label}: {last_error}")
