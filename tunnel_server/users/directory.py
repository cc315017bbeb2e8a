"""The running server's view of the user store: login secrets, admission and live changes.

`UserDirectory` keeps every user record in memory (bounded by store.MAX_USERS) and reloads
them when the store's `data_version` moves, which it checks at each login and every
USER_POLL_INTERVAL_S. After a reload it ends the sessions of users who were disabled,
removed, or whose token was rotated: at once, and they cannot log in again.

Login rules (the client's `user` is bound to the key that proved the login):
- a name in the store logs in only with that user's key (protocol/userkey.py);
- any other name logs in with the shared `auth.token`, as frp does (the name is then just a
  proxy-name prefix); without `auth.token`, only an empty store lets anyone in (the server
  behaves as it did before users existed).

Usage: the bytes relayed by each user's proxies are summed from the proxy counters and added
to the store every USAGE_FLUSH_INTERVAL_S (and at shutdown), with last-seen times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.errors import ErrorCode

from .bandwidth import UserThrottles
from .model import UserError, UserRecord, format_size
from .store import UserStore, day_period, month_period

if TYPE_CHECKING:
    from ..server import TunnelServer
    from ..session import ServerSession

logger = logging.getLogger(__name__)

USER_POLL_INTERVAL_S: Final = 1.0  # how soon a `tunneld users disable` takes effect
USAGE_FLUSH_INTERVAL_S: Final = 5.0  # how often byte counts reach the store


@dataclass(slots=True)
class _Usage:
    """Bytes of one user not yet in the store, and the counter readings last seen."""

    pending_in: int = 0
    pending_out: int = 0


class UserDirectory:
    def __init__(
        self, store: UserStore | None, shared_token: str | None, path: Path | None = None
    ) -> None:
        self.store = store
        # Without a store yet: the file `tunneld users add` makes, opened once it exists.
        self._path = path
        self.shared_token = shared_token
        self.shared_key = b""  # derive_key(auth.token or "", certificate); set by the server
        self.users: dict[str, UserRecord] = {}
        self.throttles = UserThrottles()  # bandwidth quotas, one bucket per user
        self._version = -1
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}  # (user, proxy) -> readings
        self._pending: dict[str, _Usage] = {}
        self._stored: dict[str, tuple[int, int]] = {}  # user -> (day, month) bytes in store
        self._periods = ("", "")
        self.refresh()

    # -- store ----------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Reload the users if the store changed (or with `force`); True if it did."""
        if self.store is None and not self._open_when_made():
            return False
        assert self.store is not None
        import sqlite3  # loaded with the store

        if force:
            self._version = -1
        try:
            version = self.store.data_version()
            if version == self._version:
                return False
            records = self.store.all()
        except (UserError, OSError, sqlite3.Error) as exc:
            # a locked or damaged store is not fatal: keep the last good view and retry
            logger.warning("tunneld: cannot read the user store: %s", exc)
            return False
        self._version = version
        self.users = {r.name: r for r in records}
        self.throttles.sync(self.users)
        self._stored.clear()
        return True

    def _open_when_made(self) -> bool:
        """Open the store if its file appeared (a stat per poll and per login until then)."""
        if self._path is None or not self._path.exists():
            return False
        try:
            self.store = UserStore(self._path)
        except UserError as exc:
            logger.warning("tunneld: %s", exc)
            return False
        logger.info("tunneld: user store %s opened", self._path)
        return True

    def close(self) -> None:
        self._path = None  # closed for good: a later poll does not reopen it
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- login ----------------------------------------------------------------------------
    def login_key(self, user: str) -> bytes | None:
        """The key both login proofs use for `user`; None = no way in under this name."""
        self.refresh()
        record = self.users.get(user)
        if record is not None:
            return bytes.fromhex(record.login_key)
        return self.shared_key if self._shared_admits() else None

    def _shared_admits(self) -> bool:
        """The shared key logs in names outside the store: with auth.token, or while the
        store is empty (a server without users behaves as before they existed)."""
        return self.shared_token is not None or not self.users

    def refusal(self, user: str, login_key: str) -> str:
        """Why a session of `user` that logged in with `login_key` (hex) may not stay
        ("" = ok)."""
        if user not in self.users:
            if login_key != self.shared_key.hex():
                return f"the token of {user!r} is no longer accepted (removed, or changed)"
            if not self._shared_admits():
                return "this server only admits its users now"
            return ""
        record = self.users[user]
        if login_key != record.login_key:
            return f"the token of user {user!r} was rotated"
        if not record.enabled:
            return f"user {user!r} is disabled"
        return ""

    def record(self, user: str) -> UserRecord | None:
        return self.users.get(user)

    def logged_in(self, user: str) -> None:
        if self.store is not None and user in self.users:
            self._touch([user], time.time())

    def _touch(self, names: list[str], when: float) -> None:
        """Write last-seen times, and keep our view in step: the store's data_version moves
        only for other connections' writes, so our own would not show until one came."""
        if self._safe(lambda s: s.touch(names, when)):
            for name in names:
                record = self.users.get(name)
                if record is not None:
                    self.users[name] = replace(record, last_seen=when)

    # -- usage ----------------------------------------------------------------------------
    def collect(self, server: TunnelServer) -> None:
        """Move the bytes each user's proxies relayed since the last call into pending."""
        live: set[tuple[str, str]] = set()
        for session in server.sessions.values():
            if session.user not in self.users:
                continue
            for name in session.proxies:
                counters = server.stats.get(name)
                if counters is None:
                    continue
                key = (session.user, name)
                live.add(key)
                last_in, last_out = self._seen.get(key, (0, 0))
                usage = self._pending.setdefault(session.user, _Usage())
                usage.pending_in += max(0, counters.bytes_in - last_in)
                usage.pending_out += max(0, counters.bytes_out - last_out)
                self._seen[key] = (counters.bytes_in, counters.bytes_out)
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]

    def collect_proxy(self, server: TunnelServer, user: str, name: str) -> None:
        """Count a closing proxy's last bytes (its counters outlive it, the session does not)."""
        key = (user, name)
        counters = server.stats.get(name)
        if user not in self.users or counters is None:
            return
        last_in, last_out = self._seen.pop(key, (0, 0))
        usage = self._pending.setdefault(user, _Usage())
        usage.pending_in += max(0, counters.bytes_in - last_in)
        usage.pending_out += max(0, counters.bytes_out - last_out)

    def used(self, user: str, now: float) -> tuple[int, int]:
        """Bytes (both directions) this UTC day and month, stored plus pending."""
        periods = (day_period(now), month_period(now))
        if periods != self._periods:
            self._periods = periods
            self._stored.clear()
        stored = self._stored.get(user)
        if stored is None:
            day = month = 0
            if self.store is not None:
                try:
                    day = sum(self.store.usage(user, periods[0]))
                    month = sum(self.store.usage(user, periods[1]))
                except UserError as exc:
                    logger.warning("tunneld: cannot read usage of %s: %s", user, exc)
            stored = self._stored[user] = (day, month)
        usage = self._pending.get(user)
        extra = usage.pending_in + usage.pending_out if usage is not None else 0
        return stored[0] + extra, stored[1] + extra

    def flush(self, server: TunnelServer) -> None:
        """Write pending usage and last-seen times to the store."""
        self.collect(server)
        if self.store is None:
            return
        now = time.time()
        deltas = {
            user: (u.pending_in, u.pending_out)
            for user, u in self._pending.items()
            if u.pending_in or u.pending_out
        }
        online = {s.user for s in server.sessions.values() if s.user in self.users}
        if deltas and self._safe(lambda s: s.add_usage(deltas, now)):
            for user, (bytes_in, bytes_out) in deltas.items():
                self._pending.pop(user, None)
                if user in self._stored:
                    day, month = self._stored[user]
                    total = bytes_in + bytes_out
                    self._stored[user] = (day + total, month + total)
        if online:
            self._touch(sorted(online), now)

    def _safe(self, action: Callable[[UserStore], None]) -> bool:
        if self.store is None:
            return False
        try:
            action(self.store)
        except UserError as exc:
            logger.warning("tunneld: cannot write the user store: %s", exc)
            return False
        return True

    # -- enforcement ----------------------------------------------------------------------
    def enforce(self, server: TunnelServer) -> None:
        """End the sessions that may no longer stay; close proxies over a byte quota."""
        now = time.time()
        for session in list(server.sessions.values()):
            reason = self.refusal(session.user, session.login_key)
            if reason:
                drop_session(server, session, reason)
                continue
            record = self.users.get(session.user)
            if record is None or not session.proxies:
                continue
            over = byte_quota_reached(record, self.used(record.name, now))
            if over:
                for name in list(session.proxies):
                    session.close_proxy(name, over, notify=True)

    async def run(self, server: TunnelServer) -> None:
        """Poll the store and flush usage until cancelled (owned by TunnelServer)."""
        next_flush = time.monotonic() + USAGE_FLUSH_INTERVAL_S
        while True:
            await asyncio.sleep(USER_POLL_INTERVAL_S)
            self.refresh()
            self.collect(server)
            self.enforce(server)
            server.expire_departed(time.time())
            if time.monotonic() >= next_flush:
                self.flush(server)
                next_flush = time.monotonic() + USAGE_FLUSH_INTERVAL_S


def byte_quota_reached(record: UserRecord, used: tuple[int, int]) -> str:
    """The refusal reason if a byte quota is used up ("" = not)."""
    quota = record.quota
    if quota.bytes_per_day and used[0] >= quota.bytes_per_day:
        return f"daily traffic quota of {format_size(quota.bytes_per_day)} bytes reached"
    if quota.bytes_per_month and used[1] >= quota.bytes_per_month:
        return f"monthly traffic quota of {format_size(quota.bytes_per_month)} bytes reached"
    return ""


def drop_session(server: TunnelServer, session: ServerSession, reason: str) -> None:
    logger.info(
        "tunneld: dropping client %s of user %r: %s", session.client_id, session.user, reason
    )
    session.release_all(reason)
    session.mux.close(ErrorCode.KICKED, reason)
    server.session_ended(session)
