"""The user store: one SQLite file (stdlib sqlite3) shared by tunneld and `tunneld users`.

Durability: WAL journal with `synchronous = FULL`, so every transaction that returned is on
disk before the call returns; a kill -9 of either process loses nothing that was
acknowledged. Concurrency: the running server and the command line each hold one connection;
SQLite's locking serialises their writes (each waits up to BUSY_TIMEOUT_S for the other). The
server notices changes made by other processes through `PRAGMA data_version`, which moves only
when *another* connection commits.

Privacy: the directory is created 0700 and the file (and SQLite's -wal/-shm files, which
inherit its mode) 0600, because a login key is what proves a login.

Tables:
    users(name PK, login_key, enabled, quota JSON, created, last_seen)
    usage(name, period, bytes_in, bytes_out)  -- period is "d:YYYY-MM-DD" or "m:YYYY-MM"
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from protocol.userkey import USER_TOKEN_PREFIX, user_login_key

from .model import Quota, UserError, UserRecord, check_user_name

if TYPE_CHECKING:
    import sqlite3  # imported by UserStore(): a tunneld without a store never loads it

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S: Final = 2.0  # wait this long for the other process's write lock
MAX_USERS: Final = 100_000  # `add` refuses beyond this (the server keeps all in memory)
TOKEN_BYTES: Final = 32  # random bytes in a new token (256 bits)
USAGE_KEEP_DAYS: Final = 400  # daily usage rows older than this are pruned on write
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    login_key TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    quota TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    last_seen REAL
);
CREATE TABLE IF NOT EXISTS usage (
    name TEXT NOT NULL,
    period TEXT NOT NULL,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, period)
);
"""


def new_token() -> str:
    return USER_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def day_period(when: float) -> str:
    return "d:" + time.strftime("%Y-%m-%d", time.gmtime(when))


def month_period(when: float) -> str:
    return "m:" + time.strftime("%Y-%m", time.gmtime(when))


def _private_file(path: Path) -> None:
    """Create `path` (and its directory) private to this account, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class UserStore:
    """A connection to the store; every method is one short transaction."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        self.path = path
        try:
            _private_file(path)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the user store {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        import sqlite3  # loaded by __init__ already

        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise UserError(f"user store {self.path}: {exc}") from None

    def data_version(self) -> int:
        """Moves when another connection commits (PRAGMA data_version)."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # -- reads ----------------------------------------------------------------------------
    def get(self, name: str) -> UserRecord | None:
        row = self._db.execute(
            "SELECT name, login_key, enabled, quota, created, last_seen FROM users WHERE name = ?",
            (name,),
        ).fetchone()
        return _record(row) if row is not None else None

    def all(self) -> list[UserRecord]:
        rows = self._db.execute(
            "SELECT name, login_key, enabled, quota, created, last_seen FROM users "
            "ORDER BY name LIMIT ?",
            (MAX_USERS,),
        ).fetchall()
        return [_record(row) for row in rows]

    def usage(self, name: str, period: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT bytes_in, bytes_out FROM usage WHERE name = ? AND period = ?", (name, period)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def daily_usage(self, name: str, days: int) -> list[tuple[str, int, int]]:
        """The last `days` days that have usage: (YYYY-MM-DD, bytes_in, bytes_out), oldest first."""
        rows = self._db.execute(
            "SELECT period, bytes_in, bytes_out FROM usage WHERE name = ? AND period LIKE 'd:%' "
            "ORDER BY period DESC LIMIT ?",
            (name, days),
        ).fetchall()
        return [(str(p)[2:], int(i), int(o)) for p, i, o in reversed(rows)]

    # -- writes ---------------------------------------------------------------------------
    def add(self, name: str, *, now: float | None = None) -> str:
        """Create an enabled user; return its token (the only time it exists in clear)."""
        check_user_name(name)
        token = new_token()
        key = user_login_key(token, name)
        with self._write() as db:
            count = db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            if count >= MAX_USERS:
                raise UserError(f"the store already holds {MAX_USERS} users")
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserError(f"user {name!r} already exists")
            db.execute(
                "INSERT INTO users (name, login_key, created) VALUES (?, ?, ?)",
                (name, key, time.time() if now is None else now),
            )
        return token

    def rotate_token(self, name: str) -> str:
        token = new_token()
        key = user_login_key(token, name)
        self._update(name, "login_key = ?", (key,))
        return token

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._update(name, "enabled = ?", (int(enabled),))

    def set_quota(self, name: str, quota: Quota) -> None:
        self._update(name, "quota = ?", (quota.to_json(),))

    def remove(self, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UserError(f"no such user {name!r}")
            db.execute("DELETE FROM usage WHERE name = ?", (name,))

    def _update(self, name: str, assignment: str, values: tuple[object, ...]) -> None:
        with self._write() as db:
            cursor = db.execute(f"UPDATE users SET {assignment} WHERE name = ?", (*values, name))
            if cursor.rowcount == 0:
                raise UserError(f"no such user {name!r}")

    def touch(self, names: Iterable[str], when: float) -> None:
        """Record that these users were seen (logged in, or still connected) at `when`."""
        with self._write() as db:
            db.executemany(
                "UPDATE users SET last_seen = ? WHERE name = ?", [(when, n) for n in names]
            )

    def add_usage(self, deltas: dict[str, tuple[int, int]], when: float) -> None:
        """Add (bytes_in, bytes_out) per user to today's and this month's rows, in one
        transaction; prune daily rows older than USAGE_KEEP_DAYS."""
        periods = (day_period(when), month_period(when))
        oldest = day_period(when - USAGE_KEEP_DAYS * 86400.0)
        with self._write() as db:
            for name, (bytes_in, bytes_out) in deltas.items():
                for period in periods:
                    db.execute(
                        "INSERT INTO usage (name, period, bytes_in, bytes_out) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (name, period) DO UPDATE SET "
                        "bytes_in = bytes_in + excluded.bytes_in, "
                        "bytes_out = bytes_out + excluded.bytes_out",
                        (name, period, bytes_in, bytes_out),
                    )
            db.execute("DELETE FROM usage WHERE period LIKE 'd:%' AND period < ?", (oldest,))


def _record(row: tuple[object, ...]) -> UserRecord:
    name, key, enabled, quota, created, last_seen = row
    return UserRecord(
        name=str(name),
        login_key=str(key),
        enabled=bool(enabled),
        quota=Quota.from_json(str(quota)),
        created=float(str(created)),
        last_seen=float(str(last_seen)) if last_seen is not None else None,
    )
