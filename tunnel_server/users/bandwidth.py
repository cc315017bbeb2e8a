"""Per-user bandwidth quotas: one token bucket per user, shared by all the user's proxies.

The bucket is frp's `bandwidthLimit` bucket (`tunnel_common.throttle.Throttle`): every byte a
user's proxies relay, in either direction and over all of the user's sessions, is charged to
it. How each proxy kind applies it:

* tcp: the visitor's socket runs under a `ThrottledSplice` (pauses its reading, paces writes
  into it); with the proxy's own `bandwidthLimitMode = "server"` limit too, both apply
  (`JointThrottle`).
* http and https: the stream to the client is wrapped in a `PacedStream`, whose reads and
  writes wait for the bucket (`tunnel_server/pacing.py`).
* udp: datagrams cannot be paced, so they are policed: while the bucket is in debt a datagram
  is dropped and counted in `dropped_datagrams`, as a congested network would.

A quota change from `tunneld users set-quota` or a reload takes effect on open connections at
once: each user keeps one Throttle object, and only its rate changes. A cleared quota sets the
rate to the maximum (connections already holding the bucket run free) and new connections are
no longer paced.
"""

from __future__ import annotations

from collections.abc import Mapping

from tunnel_common.bandwidth import MAX_RATE_BYTES_PER_S
from tunnel_common.throttle import Throttle

from .model import UserRecord


class UserThrottles:
    """user name -> its Throttle (bounded by the store's MAX_USERS)."""

    def __init__(self) -> None:
        self._by_user: dict[str, Throttle] = {}
        self._limited: set[str] = set()

    def sync(self, records: Mapping[str, UserRecord]) -> None:
        """Follow the store: new, changed, cleared and removed bandwidth quotas."""
        for name in [n for n in self._by_user if n not in records]:
            self._by_user.pop(name).set_rate(MAX_RATE_BYTES_PER_S)
            self._limited.discard(name)
        for name, record in records.items():
            rate = record.quota.bandwidth
            throttle = self._by_user.get(name)
            if rate:
                if throttle is None:
                    self._by_user[name] = Throttle(rate)
                else:
                    throttle.set_rate(rate)
                self._limited.add(name)
            elif throttle is not None and name in self._limited:
                throttle.set_rate(MAX_RATE_BYTES_PER_S)
                self._limited.discard(name)

    def get(self, user: str) -> Throttle | None:
        """The user's bucket, or None when the user has no bandwidth quota."""
        return self._by_user.get(user) if user in self._limited else None

    def items(self) -> list[tuple[str, Throttle]]:
        """(user, throttle) of every user with a bandwidth quota now."""
        return [(name, self._by_user[name]) for name in sorted(self._limited)]
