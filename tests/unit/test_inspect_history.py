"""Inspector history: SQLite write-behind of the capture store, its retention and its lock."""

import asyncio
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.history import (
    BUSY_FLUSH_INTERVAL_SECONDS,
    DIRTY_LIMIT_FACTOR,
    FLUSH_INTERVAL_SECONDS,
    SCHEMA_VERSION,
    HistoryDB,
    HistoryLocked,
    HistoryWriter,
)
from tunnel_client.inspect.mock import parse_rule
from tunnel_client.inspect.store import CaptureStore

TIMEOUT_S = 10.0


def exchange(
    store: CaptureStore, path: str = "/", started_at: float | None = None
) -> CapturedExchange:
    return CapturedExchange(
        id=store.new_id(),
        proxy="hook",
        started_at=time.time() if started_at is None else started_at,
        method="POST",
        path=path,
        http_version="1.1",
        request_headers=(("Content-Type", "text/xml"), ("X-Raw", "caf\xe9")),
        request_body=CapturedBody.limited(b"<xml>\x00\xff</xml>" * 3, 42, 8),
    )


async def open_history(
    path: Path, max_requests: int = 10, max_age: float = 3600.0
) -> HistoryWriter:
    store = CaptureStore(max_requests=max_requests, max_body_bytes=8)
    writer = HistoryWriter(HistoryDB(path), store, max_age=max_age)
    writer.start()
    return writer


async def reopen(writer: HistoryWriter) -> HistoryWriter:
    """Close `writer` (a last flush) and open the same file with a fresh store."""
    writer.close()
    await writer.wait_closed()
    return await open_history(writer.db.path, writer.store.max_requests, writer.max_age)


async def test_history_round_trips_every_field_across_a_restart(tmp_path: Path) -> None:
    """An exchange written by one store comes back whole (binary body, latin-1 headers)."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3")
        item = exchange(writer.store, "/wechat?signature=abc")
        writer.store.add(item)
        item.status, item.reason, item.duration_ms = 200, "OK", 12.5
        item.response_headers = (("Content-Type", "text/plain"),)
        item.response_body = CapturedBody(b"success", 7, False)
        item.late = True
        writer.store.update(item)
        again = await reopen(writer)
        try:
            [loaded] = again.store.list()
            assert loaded == item
            assert loaded.request_body.truncated and loaded.request_body.size == 42
            assert again.store.new_id() > item.id
        finally:
            again.close()
            await again.wait_closed()


async def test_history_writes_in_batches_off_the_capture_path(tmp_path: Path) -> None:
    """add() only marks; nothing reaches the file until the writer's next batch."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3")
        for n in range(5):
            writer.store.add(exchange(writer.store, f"/{n}"))
        assert writer.db.count() == 0 and writer.batches == 0
        await writer.flush()
        assert writer.db.count() == 5 and writer.batches == 1
        writer.close()
        await writer.wait_closed()


async def test_history_keeps_only_max_requests_rows(tmp_path: Path) -> None:
    """Retention by count: the file never holds more than the store's max_requests."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3", max_requests=3)
        for n in range(4):
            writer.store.add(exchange(writer.store, f"/{n}"))
            await writer.flush()
        for n in range(4, 20):  # evicted from memory before the batch: never written
            writer.store.add(exchange(writer.store, f"/{n}"))
        await writer.flush()
        assert writer.db.count() == 3
        again = await reopen(writer)
        assert [e.path for e in again.store.list()] == ["/19", "/18", "/17"]
        again.close()
        await again.wait_closed()


async def test_history_drops_exchanges_older_than_max_age(tmp_path: Path) -> None:
    """Retention by age: old rows are deleted and not loaded; old entries leave memory."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3", max_age=60.0)
        writer.store.add(exchange(writer.store, "/old", started_at=time.time() - 120))
        writer.store.add(exchange(writer.store, "/new"))
        await writer.flush()
        assert writer.db.count() == 1
        assert writer.store.expire(writer.min_started_at()) == 1
        assert [e.path for e in writer.store.list()] == ["/new"]
        writer.close()
        await writer.wait_closed()


async def test_history_clear_empties_the_file(tmp_path: Path) -> None:
    """Clearing the store clears the file; ids still grow after a restart."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3")
        first = exchange(writer.store)
        writer.store.add(first)
        await writer.flush()
        writer.store.clear()
        again = await reopen(writer)
        assert again.store.list() == []
        assert again.store.new_id() > first.id
        again.close()
        await again.wait_closed()


async def test_history_second_owner_is_refused(tmp_path: Path) -> None:
    """Two tunnelc on one state directory: the second gets HistoryLocked, not a shared file."""
    path = tmp_path / "h.sqlite3"
    first = HistoryDB(path)
    try:
        with pytest.raises(HistoryLocked, match="in use by another tunnelc"):
            HistoryDB(path)
    finally:
        first.close()
    HistoryDB(path).close()  # released on close


def test_history_file_is_private(tmp_path: Path) -> None:
    """The file is created 0600 and its new directory 0700 (bodies may hold secrets)."""
    path = tmp_path / "state" / "h.sqlite3"
    HistoryDB(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_history_other_schema_is_moved_aside(tmp_path: Path) -> None:
    """A file from another schema version is kept beside and a fresh one started."""
    path = tmp_path / "h.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE exchanges (id INTEGER); PRAGMA user_version = 99;")
    old.close()
    db = HistoryDB(path)
    try:
        assert db.count() == 0
        version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION
    finally:
        db.close()
    assert (tmp_path / "h.sqlite3.v99").exists()


async def _batch_fails_and_capture_goes_on(
    writer: HistoryWriter, caplog: pytest.LogCaptureFixture
) -> None:
    """Write one exchange into a broken file: the batch fails with a warning, the exchange
    stays in the store; then close the writer."""
    try:
        writer.store.add(exchange(writer.store))
        await writer.flush()
        assert writer.failures == 1
        assert "cannot write inspector history" in caplog.text
        assert len(writer.store) == 1
    finally:
        writer.close()
        await writer.wait_closed()


async def test_history_write_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken file (read-only) is reported once per batch; capture goes on."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3")
        writer.db._db.execute("PRAGMA query_only = ON")
        await _batch_fails_and_capture_goes_on(writer, caplog)


async def test_history_keeps_mock_rules_as_toggled(tmp_path: Path) -> None:
    """Mock rules made, toggled and deleted come back as left; hits alone write nothing;
    ids continue after the largest saved one; an unreadable saved rule is skipped."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3")
        mocks = writer.store.mocks
        proxies = frozenset({"hook"})
        for path in ("/a", "/b", "/c"):
            mocks.add(parse_rule(mocks.new_id(), {"proxy": "hook", "path": path}, proxies))
        mocks.set_enabled(mocks.rules[1], False)
        mocks.remove(2)
        await writer.flush()
        batches = writer.batches
        mocks.rules[3].hits += 5  # a hit is not a change worth a write
        await writer.flush()
        assert writer.batches == batches

        again = await reopen(writer)
        restored = again.store.mocks.rules
        assert [(r.id, r.path, r.enabled, r.hits) for r in restored.values()] == [
            (1, "/a", False, 0),
            (3, "/c", True, 0),
        ]
        assert again.store.mocks.new_id() == 4
        again.store.mocks.remove(1)
        again.close()
        await again.wait_closed()
        db = sqlite3.connect(tmp_path / "h.sqlite3")
        db.execute("""INSERT INTO mocks VALUES (9, '{"proxy": "hook", "path": "no-slash"}')""")
        db.execute("INSERT INTO mocks VALUES (10, 'not json')")
        db.commit()
        db.close()
        third = await open_history(tmp_path / "h.sqlite3")
        assert list(third.store.mocks.rules) == [3]
        third.close()
        await third.wait_closed()


async def test_history_full_batch_waits_longer_and_marks_stay_bounded(tmp_path: Path) -> None:
    """A batch of max_requests rows (the store turned over) makes the next wait the busy
    interval; marks of exchanges evicted before a batch are pruned past the dirty bound."""
    async with asyncio.timeout(TIMEOUT_S):
        writer = await open_history(tmp_path / "h.sqlite3", max_requests=3)
        try:
            writer.store.add(exchange(writer.store, "/one"))
            await writer.flush()
            assert writer._interval == FLUSH_INTERVAL_SECONDS
            for n in range(10 * DIRTY_LIMIT_FACTOR * 3):
                writer.store.add(exchange(writer.store, f"/{n}"))
                assert len(writer._dirty) <= DIRTY_LIMIT_FACTOR * 3 + 1
            await writer.flush()
            assert writer._interval == BUSY_FLUSH_INTERVAL_SECONDS
            assert writer.db.count() == 3
            writer.store.add(exchange(writer.store, "/quiet"))
            await writer.flush()
            assert writer._interval == FLUSH_INTERVAL_SECONDS
        finally:
            writer.close()
            await writer.wait_closed()


_LAZY_SQLITE_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.history import HistoryDB, HistoryWriter
from tunnel_client.inspect.store import CaptureStore

async def main(path):
    store = CaptureStore(max_requests=10, max_body_bytes=8)
    writer = HistoryWriter(HistoryDB(path), store, max_age=3600.0)
    writer.start()
    await writer.flush()  # nothing dirty: nothing to open
    idle = "sqlite3" in sys.modules
    item = CapturedExchange(store.new_id(), "hook", time.time(), "GET", "/x", "1.1", ())
    store.add(item)
    await writer.flush()
    written = "sqlite3" in sys.modules and writer.db.opened
    writer.close()
    await writer.wait_closed()
    print(idle, written, path.stat().st_mode & 0o777 == 0o600)

asyncio.run(main(Path(sys.argv[1])))
"""


def test_history_loads_sqlite_only_when_there_is_history(tmp_path: Path) -> None:
    """A fresh history file takes the lock and exists (0600) without loading SQLite; the first
    written exchange opens it, and a restart loads what was written."""
    import subprocess
    import sys

    path = tmp_path / "state" / "h.sqlite3"
    out = subprocess.run(
        [sys.executable, "-c", _LAZY_SQLITE_SCRIPT, str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert out == ["False", "True", "True"]
    db = HistoryDB(path)  # not empty now: opened at once
    try:
        assert db.opened
        assert [e.path for e in db.load(10, 0.0)] == ["/x"]
    finally:
        db.close()


def test_history_with_only_a_write_ahead_log_opens_at_start(tmp_path: Path) -> None:
    """An empty history file next to a non-empty WAL (rows a crash left there) is opened at
    start, so what the WAL holds is loaded, not overwritten later."""
    path = tmp_path / "h.sqlite3"
    path.touch(mode=0o600)
    Path(f"{path}-wal").write_bytes(b"\x00" * 32)
    db = HistoryDB(path)
    try:
        assert db.opened
    finally:
        db.close()


async def test_history_first_write_that_cannot_open_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file opened lazily on the first write: when it cannot be opened then (a directory
    stands in its place), the batch fails with a warning and capture goes on."""
    async with asyncio.timeout(TIMEOUT_S):
        path = tmp_path / "h.sqlite3"
        writer = await open_history(path)
        assert not writer.db.opened
        path.unlink()
        path.mkdir()
        await _batch_fails_and_capture_goes_on(writer, caplog)
