"""Inspector history on disk: SQLite through the stdlib, written behind the live store.

Theory of operation:
- The in-memory `CaptureStore` stays the source of truth while tunnelc runs; this module
  mirrors it into one SQLite file so a restarted tunnelc shows the same history.
- Mock rules (`MockRules`) ride along: a batch also rewrites the `mocks` table whenever the
  rules' `version` moved (made, toggled, deleted), and `start()` restores them.
- The capture path only marks an exchange dirty (`HistoryWriter.mark`, a dict store). One
  writer task wakes every `FLUSH_INTERVAL_SECONDS`, builds the row of each dirty exchange
  that is still in the store (a tuple of immutable values: the capture may go on changing the
  exchange), and hands the batch to a worker thread that writes it in one transaction. So
  the event loop never waits on the disk, and there is exactly one writer.
- The writer never wakes early: a batch holds at most `max_requests` rows (exchanges evicted
  before the batch are never written), so under any request rate the disk work is at most
  `max_requests` rows per interval. Waking on a batch size instead (tried first) wrote
  thousands of rows a second at 4k req/s, and the worker thread's GIL time cut proxied
  throughput by 60% (bench/http_bench.py). A full batch (the store turned over) makes the
  next one wait `BUSY_FLUSH_INTERVAL_SECONDS`: under load the history then costs tunnelc
  about 1% of its CPU per request instead of 5-10% (bench/inspect_cost_bench.py).
- Retention runs in the same transaction: the newest `max_requests` rows are kept, and rows
  older than `max_age` seconds are deleted (the store drops them from memory too).
- WAL mode, `synchronous=NORMAL`: a crash can lose the last batch, never corrupt the file.
- One tunnelc owns one history file: an exclusive `flock` on a sidecar lock file. A second
  tunnelc sharing the state directory runs with memory-only history and says so.
- The schema carries `PRAGMA user_version`; a file from another version is moved aside and
  a fresh one started (history is a convenience, never a reason to refuse to start).

Bounds: rows by `max_requests` and `max_age`; bodies by the store's `max_body_bytes` (what
the capture kept); dirty ids by `DIRTY_LIMIT_FACTOR` x `max_requests` (evicted ones pruned).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, Headers
from tunnel_client.inspect.mock import MAX_MOCK_RULES
from tunnel_client.inspect.store import CaptureStore

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 3
FLUSH_INTERVAL_SECONDS: Final = 1.0  # how stale the file may be behind the live store
# After a batch that rewrote the whole history (maxRequests rows: the store turned over within
# one interval, so the traffic is a load, not a developer's webhooks), the next batch waits
# this long: the disk work stays at most maxRequests rows per this interval at any rate.
BUSY_FLUSH_INTERVAL_SECONDS: Final = 5.0
# Marked exchanges held between batches, as a multiple of maxRequests; past it the ones
# already evicted from the store (never to be written) are dropped.
DIRTY_LIMIT_FACTOR: Final = 4
BUSY_TIMEOUT_SECONDS: Final = 5.0  # sqlite waits this long on a lock held by a checkpoint
DEFAULT_MAX_AGE_SECONDS: Final = 7 * 24 * 3600.0  # inspect.maxAge

_COLUMNS: Final = (
    "id",
    "proxy",
    "started_at",
    "method",
    "path",
    "http_version",
    "request_headers",
    "request_body",
    "request_size",
    "request_truncated",
    "status",
    "reason",
    "response_http_version",
    "response_headers",
    "response_body",
    "response_size",
    "response_truncated",
    "duration_ms",
    "replay",
    "replay_of",
    "error",
    "late",
    "mocked",
)
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY,
    proxy TEXT NOT NULL,
    started_at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    http_version TEXT NOT NULL,
    request_headers TEXT NOT NULL,
    request_body BLOB NOT NULL,
    request_size INTEGER NOT NULL,
    request_truncated INTEGER NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    response_http_version TEXT NOT NULL,
    response_headers TEXT NOT NULL,
    response_body BLOB NOT NULL,
    response_size INTEGER NOT NULL,
    response_truncated INTEGER NOT NULL,
    duration_ms REAL,
    replay INTEGER NOT NULL,
    replay_of INTEGER,
    error TEXT,
    late INTEGER NOT NULL,
    mocked TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_started ON exchanges (started_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mocks (id INTEGER PRIMARY KEY, rule TEXT NOT NULL);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT: Final = (
    f"INSERT OR REPLACE INTO exchanges ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


class HistoryLocked(Exception):
    """Another tunnelc holds the history file."""


class HistoryError(Exception):
    """SQLite refused to open, read or write the history file (the message says why)."""


# Headers are stored as "name\0value\0name\0value": the capture's header names and values
# never hold NUL (httptools refuses it), and joining is several times cheaper than JSON.
_SEP: Final = "\x00"


def _headers_text(headers: Headers) -> str:
    return _SEP.join([part for pair in headers for part in pair])


def _headers_from(text: str) -> Headers:
    if not text:
        return ()
    parts = text.split(_SEP)
    return tuple(zip(parts[::2], parts[1::2], strict=False))  # a stray NUL loses one pair


def _row(exchange: CapturedExchange) -> tuple[object, ...]:
    request, response = exchange.request_body, exchange.response_body
    return (
        exchange.id,
        exchange.proxy,
        exchange.started_at,
        exchange.method,
        exchange.path,
        exchange.http_version,
        _headers_text(exchange.request_headers),
        request.data,
        request.size,
        int(request.truncated),
        exchange.status,
        exchange.reason,
        exchange.response_http_version,
        _headers_text(exchange.response_headers),
        response.data,
        response.size,
        int(response.truncated),
        exchange.duration_ms,
        int(exchange.replay),
        exchange.replay_of,
        exchange.error,
        int(exchange.late),
        exchange.mocked,
    )


def _exchange(row: sqlite3.Row) -> CapturedExchange:
    return CapturedExchange(
        id=row["id"],
        proxy=row["proxy"],
        started_at=row["started_at"],
        method=row["method"],
        path=row["path"],
        http_version=row["http_version"],
        request_headers=_headers_from(row["request_headers"]),
        request_body=CapturedBody(
            bytes(row["request_body"]), row["request_size"], bool(row["request_truncated"])
        ),
        status=row["status"],
        reason=row["reason"],
        response_http_version=row["response_http_version"],
        response_headers=_headers_from(row["response_headers"]),
        response_body=CapturedBody(
            bytes(row["response_body"]), row["response_size"], bool(row["response_truncated"])
        ),
        duration_ms=row["duration_ms"],
        replay=bool(row["replay"]),
        replay_of=row["replay_of"],
        error=row["error"],
        late=bool(row["late"]),
        mocked=row["mocked"],
    )


def _create_private(path: Path) -> int:
    """Create `path` 0600 if it is missing, before sqlite does (sqlite would follow the
    umask); its size in bytes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class HistoryDB:
    """The SQLite file. Blocking: used at start-up, then from the writer's thread only.

    The lock is taken at once. The file is opened (and `sqlite3`, about 2.3 MiB with its
    library, imported) at once only when it already holds something to load; otherwise on
    the first `write`, so a client whose inspector captures nothing never loads SQLite.
    Every SQLite failure is raised as `HistoryError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise HistoryLocked(f"{path} is in use by another tunnelc") from None
        self._conn: sqlite3.Connection | None = None
        try:
            empty = _create_private(path) == 0
            wal = Path(f"{path}-wal")  # a crash may leave the rows there, not yet in the file
            if not empty or (wal.exists() and wal.stat().st_size > 0):
                self._conn = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @property
    def opened(self) -> bool:
        """True once the SQLite file is open (it opens on the first write when empty)."""
        return self._conn is not None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        import sqlite3  # here: loaded only when there is history to read or write

        try:
            return self._open_file()
        except (sqlite3.Error, OSError) as exc:  # also on the first write, in the thread
            raise HistoryError(str(exc)) from exc

    def _open_file(self) -> sqlite3.Connection:
        if not self.path.exists():  # removed since start
            _create_private(self.path)
        db = self._connect()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'exchanges'")
        if tables.fetchone()[0] and version != SCHEMA_VERSION:
            db.close()
            aside = self.path.with_name(f"{self.path.name}.v{version}")
            logger.warning(
                "tunnelc: inspector history %s has schema %d, not %d; moved it to %s",
                self.path,
                version,
                SCHEMA_VERSION,
                aside,
            )
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.path.replace(aside)
            _create_private(self.path)
            db = self._connect()
        db.executescript(_SCHEMA)
        return db

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        # The writer thread uses it after start-up; calls never overlap (one writer task).
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False, isolation_level=None
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def load(self, max_requests: int, min_started_at: float) -> list[CapturedExchange]:
        """The newest `max_requests` exchanges started at or after `min_started_at`, oldest
        first."""
        if self._conn is None:
            return []  # nothing was ever written
        rows = self._db.execute(
            "SELECT * FROM exchanges WHERE started_at >= ? ORDER BY id DESC LIMIT ?",
            (min_started_at, max_requests),
        ).fetchall()
        return [_exchange(row) for row in reversed(rows)]

    def load_mocks(self) -> list[tuple[int, object]]:
        """The saved mock rules, (id, rule JSON), by id (unreadable JSON is skipped)."""
        if self._conn is None:
            return []
        rows = self._db.execute(
            "SELECT id, rule FROM mocks ORDER BY id LIMIT ?", (MAX_MOCK_RULES,)
        ).fetchall()
        saved: list[tuple[int, object]] = []
        for row in rows:
            try:
                saved.append((int(row[0]), json.loads(row[1])))
            except ValueError as exc:
                logger.warning("tunnelc: saved mock rule #%s skipped: %s", row[0], exc)
        return saved

    def max_id(self) -> int:
        """The largest id ever handed out (0 for none), so new ids never reuse an old one,
        also after a clear: a deep link never points at a different request."""
        if self._conn is None:
            return 0
        row = self._db.execute(
            "SELECT max(coalesce((SELECT max(id) FROM exchanges), 0), "
            "coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0))"
        ).fetchone()
        return int(row[0])

    def write(
        self,
        rows: Sequence[tuple[object, ...]],
        *,
        clear: bool,
        keep: int,
        min_started_at: float,
        last_id: int = 0,
        mocks: Sequence[tuple[int, dict[str, object]]] | None = None,
    ) -> None:
        """In one transaction: optionally forget everything, upsert `rows` (built by `_row`),
        record `last_id`, then keep only the newest `keep` rows started at or after
        `min_started_at`; `mocks` (when given) replaces the saved mock rules. Raises
        `HistoryError` when SQLite cannot open or write the file."""
        import sqlite3

        try:
            with self._transaction() as db:
                if mocks is not None:
                    db.execute("DELETE FROM mocks")
                    db.executemany(
                        "INSERT INTO mocks (id, rule) VALUES (?, ?)",
                        [(rule_id, json.dumps(rule)) for rule_id, rule in mocks],
                    )
                if clear:
                    db.execute("DELETE FROM exchanges")
                db.executemany(_INSERT, rows)
                db.execute(
                    "INSERT INTO meta VALUES ('last_id', ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = max(value, excluded.value)",
                    (last_id,),
                )
                db.execute("DELETE FROM exchanges WHERE started_at < ?", (min_started_at,))
                db.execute(
                    "DELETE FROM exchanges WHERE id <= "
                    "(SELECT id FROM exchanges ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (keep,),
                )
        except sqlite3.Error as exc:
            raise HistoryError(str(exc)) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self) -> int:
        if self._conn is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM exchanges").fetchone()[0])

    def close(self) -> None:
        """Close the file and release the lock (idempotent)."""
        if self._lock_fd < 0:
            return
        if self._conn is not None:
            self._conn.close()
        os.close(self._lock_fd)
        self._lock_fd = -1


class HistoryWriter:
    """The one writer: batches dirty exchanges from `store` into `db`.

    `start()` loads the saved history into the store and starts the writer task, which this
    object owns: `close()` asks it for a last flush, `wait_closed()` waits for it and closes
    the file.
    """

    def __init__(self, db: HistoryDB, store: CaptureStore, *, max_age: float) -> None:
        self.db = db
        self.store = store
        self.max_age = max_age
        # Ids, not exchanges: an evicted exchange is freed at once (see `mark`).
        self._dirty: set[int] = set()
        self._dirty_limit = DIRTY_LIMIT_FACTOR * store.max_requests
        self._interval = FLUSH_INTERVAL_SECONDS  # until the next batch
        self._clear = False
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._mocks_version = 0  # the MockRules.version last written
        self.batches = 0  # transactions written, for tests and the logs
        self.failures = 0

    def start(self) -> int:
        """Load the saved history into the store, then start writing; returns how many
        exchanges were loaded."""
        saved = self.db.load(self.store.max_requests, self.min_started_at())
        self.store.restore(saved, next_id=self.db.max_id() + 1)
        mocks = self.store.mocks
        if mocks.restore(self.db.load_mocks()):
            logger.info("tunnelc: %d mock rules restored from the history", len(mocks.rules))
        self._mocks_version = mocks.version
        self.store.history = self
        self._task = asyncio.create_task(self._run(), name="inspector-history")
        return len(saved)

    def mark(self, exchange: CapturedExchange) -> None:
        """Note that `exchange` changed; the next batch writes it (hot path: a dict store)."""
        # Holding the exchange itself until the batch (tried first) kept evicted exchanges
        # alive through the garbage collector's young generations; under load the full
        # collections that followed cost tunnelc more than the history's disk work.
        dirty = self._dirty
        dirty.add(exchange.id)
        if len(dirty) > self._dirty_limit:
            # Amortised: this leaves at most max_requests, so it runs at most once per
            # (DIRTY_LIMIT_FACTOR - 1) * max_requests marks.
            get = self.store.get
            self._dirty = {key for key in dirty if get(key) is not None}

    def cleared(self) -> None:
        """The store forgot everything: the next batch empties the file first."""
        self._dirty.clear()
        self._clear = True
        self._wake.set()

    def min_started_at(self) -> float:
        return time.time() - self.max_age

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            self.store.expire(self.min_started_at())
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        """Write what is dirty now, in one transaction on a worker thread."""
        mocks = self.store.mocks
        mocks_version = mocks.version
        mocks_changed = mocks_version != self._mocks_version
        if not self._dirty and not self._clear and not mocks_changed:
            return
        # Rows built here: the capture keeps mutating the live objects while the thread writes.
        store = self.store
        kept = [store.get(key) for key in sorted(self._dirty)]
        rows = [_row(e) for e in kept if e is not None]
        clear, self._clear = self._clear, False
        self._dirty = set()
        busy = len(rows) >= store.max_requests
        self._interval = BUSY_FLUSH_INTERVAL_SECONDS if busy else FLUSH_INTERVAL_SECONDS
        try:
            await asyncio.to_thread(
                self.db.write,
                rows,
                clear=clear,
                keep=store.max_requests,
                min_started_at=self.min_started_at(),
                last_id=store.last_id,
                mocks=mocks.saved() if mocks_changed else None,
            )
        except HistoryError as exc:
            # A full disk or a removed file must not stop the tunnel: say so and go on.
            self.failures += 1
            logger.warning("tunnelc: cannot write inspector history %s: %s", self.db.path, exc)
            return
        self.batches += 1
        self._mocks_version = mocks_version

    def close(self) -> None:
        """Ask for a last flush and stop (idempotent)."""
        self._closing = True
        self._wake.set()
        if self.store.history is self:
            self.store.history = None

    async def wait_closed(self) -> None:
        try:
            if self._task is not None:
                await self._task
        finally:
            self.db.close()
