"""The SQLite file behind offline capture: stored requests and parked routes.

`offline.sqlite3` in tunneld's stateDir (mode 0600; SQLite gives its WAL and shared-memory
files the same mode) holds two tables:

- `stored`: each request tunneld answered and kept for an offline proxy, in arrival order,
  bounded per proxy by `OfflineLimits` (count, bytes, age) and in all by its total bytes;
- `parked`: each parked route (its routing fields as JSON) and its fallback policy, so that a
  restarted tunneld answers and stores for it again until the client comes back. At most
  `MAX_PARKED_ROUTES` are read back.

Every method blocks: `OfflineParking` calls them through `asyncio.to_thread`, one at a time.
The file is opened (and made) by the first method that needs it, so a tunneld whose proxies
never park or store anything never loads sqlite3 for it (about 1.7 MiB with one connection).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .vhost.offline import OfflinePolicy
from .vhost.routing import HTTPRoute
from .vhost.upstream import Opener

if TYPE_CHECKING:
    import sqlite3

DELIVERED_LATE_HEADER: Final = "X-Tunnelkit-Delivered-Late"  # its value: when tunneld got it
FILE_MODE: Final = 0o600
MAX_PARKED_ROUTES: Final = 65536  # rows read back at start (the vhost router's own bound)
# HTTPRoute fields that are not kept: the opener is rebuilt from the policy.
_NOT_KEPT: Final = frozenset({"opener"})
_CONNECTION: Final = re.compile(rb"\r\nconnection:[^\r\n]*", re.IGNORECASE)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stored (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    proxy_key TEXT NOT NULL,
    received_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS stored_proxy ON stored (proxy_key, id);
CREATE TABLE IF NOT EXISTS parked (
    proxy_key TEXT PRIMARY KEY,
    since REAL NOT NULL,
    route TEXT NOT NULL,
    policy TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    max_requests: int  # per proxy
    max_bytes: int  # per proxy
    max_age: float  # seconds
    max_total_bytes: int  # all proxies together


@dataclass(frozen=True, slots=True)
class StoredRequest:
    id: int
    received_at: float
    data: bytes

    def for_delivery(self) -> bytes:
        """The request as stored, marked delivered late and Connection: close (one stream,
        one request: the client's app closes after answering)."""
        head_end = self.data.find(b"\r\n\r\n")
        head, rest = self.data[:head_end], self.data[head_end:]
        head = _CONNECTION.sub(b"", head)
        line_end = head.find(b"\r\n")
        line_end = len(head) if line_end < 0 else line_end
        extra = f"\r\n{DELIVERED_LATE_HEADER}: {self.received_at:.3f}\r\nConnection: close"
        return head[:line_end] + extra.encode("ascii") + head[line_end:] + rest


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """One parked route as kept on disk: what `HTTPRoute(**route, opener=...)` takes."""

    key: str  # the proxy's server-wide name
    since: float  # unix time it was parked
    route: dict[str, Any]
    policy: OfflinePolicy

    @classmethod
    def of(cls, key: str, since: float, route: HTTPRoute, policy: OfflinePolicy) -> ParkedRecord:
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(route):
            if not f.init or f.name in _NOT_KEPT:
                continue
            value = getattr(route, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple | list):
                value = list(value)
            fields[f.name] = value
        return cls(key, since, fields, policy)

    def build(self, opener: Opener) -> HTTPRoute:
        """The route again (validated as any new route; raises TypeError/ValueError/RouteError
        on a row this version of tunneld cannot read)."""
        known = {f.name for f in dataclasses.fields(HTTPRoute) if f.init}
        unknown = set(self.route) - known
        if unknown:
            raise ValueError(f"unknown route fields {sorted(unknown)}")
        return HTTPRoute(**self.route, opener=opener)


def _policy_json(policy: OfflinePolicy) -> str:
    return json.dumps({"status": policy.status, "body": policy.body, "capture": policy.capture})


def _policy_of(text: str) -> OfflinePolicy:
    data = json.loads(text)
    status, body, capture = data["status"], data["body"], data["capture"]
    if not (isinstance(status, int) and 200 <= status <= 599):
        raise ValueError(f"bad status {status!r}")
    if not isinstance(body, str) or not isinstance(capture, bool):
        raise ValueError("bad body or capture")
    return OfflinePolicy(status, body, capture)


class OfflineStore:
    """The SQLite file of stored requests and parked routes (blocking; see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file made, 0600) on first use."""
        if self._conn is None:
            import sqlite3

            path = self.path
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            os.chmod(path, FILE_MODE)  # it holds request bodies and httpPassword values
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            self._conn = db
        return self._conn

    @property
    def empty(self) -> bool:
        """True while there is no file yet (nothing stored, nothing parked): checking that
        needs no connection."""
        return self._conn is None and not self.path.exists()

    def add(self, proxy_key: str, data: bytes, limits: OfflineLimits, now: float) -> bool:
        """Store one request unless it would break the proxy's limits."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM stored WHERE received_at < ?", (now - limits.max_age,))
            count, size = db.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM stored WHERE proxy_key = ?",
                (proxy_key,),
            ).fetchone()
            ok = count < limits.max_requests and size + len(data) <= limits.max_bytes
            if ok:
                (total,) = db.execute(
                    "SELECT coalesce(sum(length(data)), 0) FROM stored"
                ).fetchone()
                ok = total + len(data) <= limits.max_total_bytes
            if ok:
                db.execute(
                    "INSERT INTO stored (proxy_key, received_at, data) VALUES (?, ?, ?)",
                    (proxy_key, now, data),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return bool(ok)

    def pending(self, proxy_key: str, min_received_at: float) -> list[StoredRequest]:
        rows = self._db.execute(
            "SELECT id, received_at, data FROM stored WHERE proxy_key = ? AND received_at >= ? "
            "ORDER BY id",
            (proxy_key, min_received_at),
        ).fetchall()
        return [StoredRequest(row[0], row[1], bytes(row[2])) for row in rows]

    def remove(self, request_id: int) -> None:
        self._db.execute("DELETE FROM stored WHERE id = ?", (request_id,))

    def save_parked(self, changes: Mapping[str, ParkedRecord | None]) -> None:
        """Write a batch of parkings (a record) and unparkings (None) in one transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, record in changes.items():
                if record is None:
                    db.execute("DELETE FROM parked WHERE proxy_key = ?", (key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO parked (proxy_key, since, route, policy) "
                        "VALUES (?, ?, ?, ?)",
                        (key, record.since, json.dumps(record.route), _policy_json(record.policy)),
                    )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load_parked(self) -> tuple[list[ParkedRecord], list[tuple[str, str]]]:
        """The parked routes, oldest first, and (key, problem) for each unreadable row."""
        rows = self._db.execute(
            "SELECT proxy_key, since, route, policy FROM parked ORDER BY since LIMIT ?",
            (MAX_PARKED_ROUTES,),
        ).fetchall()
        records, bad = [], []
        for key, since, route, policy in rows:
            try:
                fields = json.loads(route)
                if not isinstance(fields, dict):
                    raise ValueError("the route is not an object")
                records.append(ParkedRecord(key, float(since), fields, _policy_of(policy)))
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((key, str(exc)))
        return records, bad

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
