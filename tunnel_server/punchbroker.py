"""xtcp rendezvous, server-wide: probe tokens waiting for the address tunneld sees.

A rendezvous (tunnel_server/proxies/xtcp.py) asks for one token per side. Each side sends the
token in a `punch_probe` on a short TLS connection to bindPort, made from the local port it
will punch from; the login code (session.py) hands it here with the connection's peer address,
which is the side's address after NAT. Tokens are 16 random bytes, good for one probe, and
forgotten when their rendezvous ends; an unknown token is counted and ignored. Nothing here
is reachable by guessing: a probe only ever answers its own rendezvous.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Final

from protocol.messages import PUNCH_TOKEN_BYTES

logger = logging.getLogger(__name__)

# Tokens waiting for their probe, server-wide (two per rendezvous in progress). When full, a
# new rendezvous is refused (its visitor relays through tunneld at once).
MAX_PENDING_PROBES: Final = 4096


class BrokerFull(Exception):
    """No room for another rendezvous right now."""


@dataclass(slots=True)
class PunchCounters:
    rendezvous: int = 0  # rendezvous started
    direct: int = 0  # the visitor reported a P2P connection
    failed: int = 0  # punching failed (the visitor relays instead)
    unknown_probes: int = 0  # probes whose token no rendezvous waits for


class PunchBroker:
    def __init__(self, limit: int = MAX_PENDING_PROBES) -> None:
        self.limit = limit
        self._waiting: dict[bytes, asyncio.Future[tuple[str, int]]] = {}
        self.counters = PunchCounters()

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self) -> tuple[bytes, asyncio.Future[tuple[str, int]]]:
        """A fresh token and the future its probe's address will complete; BrokerFull."""
        if len(self._waiting) >= self.limit:
            raise BrokerFull(f"{self.limit} P2P rendezvous tokens are pending; retry later")
        token = secrets.token_bytes(PUNCH_TOKEN_BYTES)
        future: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return token, future

    def observed(self, token: bytes, peer: tuple[str, int] | None) -> bool:
        """A probe arrived from `peer`; True when a rendezvous was waiting for it."""
        future = self._waiting.pop(token, None)
        if future is None or peer is None or future.done():
            self.counters.unknown_probes += 1
            return False
        future.set_result(peer)
        return True

    def forget(self, token: bytes) -> None:
        future = self._waiting.pop(token, None)
        if future is not None and not future.done():
            future.cancel()
