"""What the dashboard's users page reads and does: a view of the store plus live sessions.

Writes go through the running server's own store connection; `on_change` then makes the
server re-read the store and enforce the result at once (a disabled user's sessions end
before the request returns).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

from .directory import UserDirectory
from .model import UserError
from .store import day_period, month_period

MAX_TRAFFIC_DAYS: Final = 366


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user: str
    client_id: str
    address: str
    proxies: tuple[str, ...]


class UsersAdmin:
    def __init__(
        self,
        directory: UserDirectory,
        sessions: Callable[[], Iterable[SessionInfo]],
        on_change: Callable[[], None],
    ) -> None:
        self._directory = directory
        self._sessions = sessions
        self._on_change = on_change

    def rows(self) -> list[dict[str, Any]]:
        store = self._directory.store
        self._directory.refresh()
        now = time.time()
        by_user: dict[str, list[SessionInfo]] = {}
        for session in self._sessions():
            by_user.setdefault(session.user, []).append(session)
        rows = []
        for record in sorted(self._directory.users.values(), key=lambda r: r.name):
            day = month = 0
            if store is not None:
                day = sum(store.usage(record.name, day_period(now)))
                month = sum(store.usage(record.name, month_period(now)))
            sessions = by_user.get(record.name, [])
            rows.append(
                {
                    "name": record.name,
                    "enabled": record.enabled,
                    "created": record.created,
                    "last_seen": record.last_seen,
                    "online": bool(sessions),
                    "quota": asdict(record.quota),
                    "quota_text": record.quota.describe(),
                    "bytes_today": day,
                    "bytes_this_month": month,
                    "sessions": [
                        {"client_id": s.client_id, "address": s.address} for s in sessions
                    ],
                    "proxies": sorted(p for s in sessions for p in s.proxies),
                }
            )
        return rows

    def set_enabled(self, name: str, enabled: bool) -> bool:
        store = self._directory.store
        if store is None:
            return False
        try:
            store.set_enabled(name, enabled)
        except UserError:
            return False
        self._on_change()
        return True

    def rotate(self, name: str) -> str | None:
        """A new token for `name` (returned once, never stored), or None if there is no user."""
        store = self._directory.store
        if store is None:
            return None
        try:
            token = store.rotate_token(name)
        except UserError:
            return None
        self._on_change()
        return token

    def traffic(self, name: str, days: int) -> list[dict[str, Any]] | None:
        store = self._directory.store
        if store is None or name not in self._directory.users:
            return None
        days = max(1, min(days, MAX_TRAFFIC_DAYS))
        return [
            {"day": day, "bytes_in": bytes_in, "bytes_out": bytes_out}
            for day, bytes_in, bytes_out in store.daily_usage(name, days)
        ]
