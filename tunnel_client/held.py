"""Proxies refused because another, possibly stale, session holds their name, port or domain.

A client that crashed behind a NAT leaves a session the server still believes in until its
keepalive runs out. The server refuses the restarted client's proxies with `retry` set, and
this asks again with capped, jittered backoff until the request succeeds or the session ends.
One timer per waiting proxy; all are cancelled when the session ends or the proxy goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from .backoff import Backoff

logger = logging.getLogger(__name__)

# Retries of a held proxy: first after about a second, then at most this far apart. The
# server drops a stale session after its heartbeat timeout (90 s by default).
HELD_RETRY_BASE_S: Final = 1.0
HELD_RETRY_CAP_S: Final = 15.0
WAITING_STATE: Final = "waiting"
WAITING_MESSAGE: Final = "waiting for the stale session to expire"


class HeldRetries:
    """Owns the retry timers of waiting proxies (bounded by the number of proxies)."""

    def __init__(self, ask_again: Callable[[str], None]) -> None:
        self._ask_again = ask_again
        self._backoffs: dict[str, Backoff] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, name: str, reason: str) -> str:
        """Ask for `name` again after the next delay; returns the status text to show."""
        backoff = self._backoffs.setdefault(name, Backoff(HELD_RETRY_BASE_S, HELD_RETRY_CAP_S))
        delay = backoff.next_delay()
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay, self._fire, name)
        logger.warning(
            "tunnelc: proxy %s %s (attempt %d, next in %.1fs): %s",
            name,
            WAITING_MESSAGE,
            backoff.attempt,
            delay,
            reason,
        )
        return f"{WAITING_MESSAGE} (attempt {backoff.attempt}): {reason}"

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self._ask_again(name)

    def succeeded(self, name: str) -> None:
        self.forget(name)

    def forget(self, name: str) -> None:
        self._backoffs.pop(name, None)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        """The session ended: a new one registers every proxy again anyway."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._backoffs.clear()

    def waiting(self) -> int:
        return len(self._timers)
