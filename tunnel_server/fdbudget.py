"""The descriptor budget: logins always have descriptors; public connections get the rest.

A public server holds one descriptor per visitor connection (vhost or a tcp proxy's public
port). Left alone, a flood of visitors takes every descriptor, after which `accept()` on the
control port fails and no client can log in or reconnect. So at start-up tunneld:

1. raises its soft RLIMIT_NOFILE to the hard limit (as nginx's worker_rlimit_nofile does);
2. reserves descriptors for the control port: one per client (`maxClients`), per pending
   login (`maxPendingLogins`), per busy answer, plus INTERNAL_FDS for listeners, files and the
   dashboard, but never more than half of the limit;
3. gives visitor connections the rest (`public_limit`): each takes one with `try_acquire()`
   and gives it back with `release()`. Over the budget a visitor connection is refused at
   once (a tcp proxy closes it, the vhost answers 503), counted, and logged at most once per
   LOG_INTERVAL_S with the numbers.

If `accept()` on the control port still fails for want of descriptors (other processes, a
limit lowered at run time), the listener backs off briefly and logs the same way; it never
crashes.
"""

from __future__ import annotations

import logging
import math
import resource
from typing import Final

from .stats import LimitCounters

logger = logging.getLogger(__name__)

INTERNAL_FDS: Final = 128  # listeners, the certificate and state files, dashboard connections
LOG_INTERVAL_S: Final = 60.0  # at most one "out of descriptors" line per this many seconds


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # a container may forbid it: keep the soft one
            logger.debug("tunneld: cannot raise the descriptor limit: %s", exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class FDBudget:
    """Counts visitor connections against the descriptors left after the control reserve."""

    def __init__(
        self,
        limit: int = 1 << 20,
        control_reserve: int = 0,
        counters: LimitCounters | None = None,
    ) -> None:
        self.limit = limit
        self.reserve = min(control_reserve, limit // 2)
        self.public_limit = max(0, limit - self.reserve)
        self.public_in_use = 0
        self.counters = counters or LimitCounters()  # shared with /metrics
        self.counters.visitor_fds_limit = self.public_limit
        self._last_log = -math.inf

    @classmethod
    def for_server(cls, control_reserve: int, counters: LimitCounters) -> FDBudget:
        budget = cls(raise_nofile_limit(), control_reserve + INTERNAL_FDS, counters)
        logger.info(
            "tunneld: descriptor limit %d: %d reserved for logins and sessions, %d for visitor "
            "connections",
            budget.limit,
            budget.reserve,
            budget.public_limit,
        )
        return budget

    def try_acquire(self, now: float) -> bool:
        """Take a descriptor for a visitor connection; False (counted, logged) if none is left."""
        if self.public_in_use >= self.public_limit:
            self.counters.fd_refused += 1
            self._log(now, "refusing visitor connections")
            return False
        self.public_in_use += 1
        self.counters.visitor_fds = self.public_in_use
        return True

    def release(self) -> None:
        self.public_in_use -= 1
        self.counters.visitor_fds = self.public_in_use

    def accept_failed(self, exc: OSError, now: float) -> None:
        """The control port's accept() failed for want of descriptors (or memory)."""
        self.counters.fd_accept_failures += 1
        self._log(now, f"the control port cannot accept ({exc.strerror or exc})")

    def _log(self, now: float, what: str) -> None:
        if now - self._last_log < LOG_INTERVAL_S:
            return
        self._last_log = now
        logger.warning(
            "tunneld: out of descriptors, %s: %d of %d visitor connections open, %d reserved "
            "for logins, limit %d (refused so far: %d visitor connections, %d accepts; raise "
            "`ulimit -n` to serve more)",
            what,
            self.public_in_use,
            self.public_limit,
            self.reserve,
            self.limit,
            self.counters.fd_refused,
            self.counters.fd_accept_failures,
        )
