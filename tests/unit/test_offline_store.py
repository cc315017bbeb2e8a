"""Offline capture on tunneld: the fallback stream, the store's bounds, delivery marking."""

import asyncio
import dataclasses
import stat
import time
from pathlib import Path
from typing import Any

import httptools
import pytest

from tunnel_client.inspect.capture import DELIVERED_LATE_HEADER as CLIENT_HEADER
from tunnel_server.offline import (
    DELIVERED_LATE_HEADER,
    OfflineLimits,
    OfflineParking,
    OfflineStore,
    StoredRequest,
    offline_note,
)
from tunnel_server.offlinestore import ParkedRecord
from tunnel_server.vhost.offline import OfflineByteStream, OfflinePolicy
from tunnel_server.vhost.routing import HTTPRoute, VhostRouter

REQUEST = b"POST /hook HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhi"
LIMITS = OfflineLimits(max_requests=2, max_bytes=1000, max_age=60.0, max_total_bytes=1030)


async def read_answer(stream: OfflineByteStream) -> bytes:
    async with asyncio.timeout(5):
        return await stream.read(65536)


async def test_offline_stream_answers_each_keep_alive_request_from_the_policy() -> None:
    """Two requests on one stream, written in pieces: each stored and answered in order."""
    stored: list[bytes] = []

    async def store(data: bytes) -> bool:
        stored.append(data)
        return True

    stream = OfflineByteStream(OfflinePolicy(202, "queued", True), store, 1000)
    await stream.write(REQUEST[:10])
    await stream.write(REQUEST[10:])
    first = await read_answer(stream)
    assert first.startswith(b"HTTP/1.1 202 Accepted\r\n") and first.endswith(b"\r\n\r\nqueued")
    assert b"X-Tunnelkit-Offline: stored" in first
    await stream.write(REQUEST.replace(b"hi", b"yo"))
    assert (await read_answer(stream)).endswith(b"queued")
    assert stored == [REQUEST, REQUEST.replace(b"hi", b"yo")]


async def test_offline_stream_refuses_what_it_cannot_store_with_503() -> None:
    """A request over the byte limit, or a full store, gets 503 + Retry-After, not the 200."""

    async def full(data: bytes) -> bool:
        return False

    big = OfflineByteStream(OfflinePolicy(200, "", True), full, 40)
    await big.write(REQUEST)
    answer = await read_answer(big)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 60" in answer
    assert b"larger than 40 bytes" in answer
    stream = OfflineByteStream(OfflinePolicy(200, "", True), full, 1000)
    await stream.write(REQUEST)
    assert b"store is full" in await read_answer(stream)


async def test_offline_stream_without_capture_only_answers() -> None:
    """offlineStatus without offlineCapture: the fallback answer, nothing stored."""
    stream = OfflineByteStream(OfflinePolicy(200, "success", False), None, 1000)
    await stream.write(REQUEST)
    answer = await read_answer(stream)
    assert b"X-Tunnelkit-Offline: not-stored" in answer and answer.endswith(b"success")
    stream.write_eof()
    assert await read_answer(stream) == b""


def test_offline_store_bounds_by_count_bytes_and_age(tmp_path: Path) -> None:
    """maxRequests, maxBytes and maxTotalBytes refuse more; maxAge drops old ones; order is
    arrival order."""
    store = OfflineStore(tmp_path / "offline.sqlite3")
    now = time.time()
    assert store.add("web", b"a" * 10, LIMITS, now)
    assert store.add("web", b"b" * 10, LIMITS, now + 1)
    assert not store.add("web", b"c", LIMITS, now + 2)  # count
    assert store.add("api", b"d" * 1000, LIMITS, now)  # another proxy has its own budget
    assert not store.add("other", b"e" * 1001, LIMITS, now)  # bytes
    assert not store.add("other", b"g" * 11, LIMITS, now)  # all proxies: 1031 > maxTotalBytes
    assert store.add("other", b"g" * 10, LIMITS, now)
    assert [r.data for r in store.pending("web", 0)] == [b"a" * 10, b"b" * 10]
    assert store.add("web", b"f", LIMITS, now + 61.5)  # the first two expired
    assert [r.data for r in store.pending("web", 0)] == [b"f"]
    store.close()
    again = OfflineStore(tmp_path / "offline.sqlite3")  # survives a restart
    assert [r.data for r in again.pending("web", 0)] == [b"f"]
    again.close()


def test_offline_delivery_marks_the_request_late_and_closing() -> None:
    """for_delivery adds the delivered-late header and Connection: close, replacing any."""
    stored = StoredRequest(
        1, 1700000000.5, REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n")
    )
    data = stored.for_delivery()
    headers: list[tuple[bytes, bytes]] = []

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            headers.append((name.lower(), value))

    httptools.HttpRequestParser(Sink()).feed_data(data)
    assert (DELIVERED_LATE_HEADER.lower().encode(), b"1700000000.500") in headers
    assert [v for n, v in headers if n == b"connection"] == [b"close"]
    assert data.endswith(b"\r\n\r\nhi")
    assert DELIVERED_LATE_HEADER == CLIENT_HEADER  # the client reads what the server writes


def parked_route(opener: Any = None, **extra: Any) -> HTTPRoute:
    """An http route as a proxy registers it, with the options parking must keep."""

    async def unused(src: tuple[str, int]) -> Any:
        raise AssertionError("the parked route must answer from its policy")

    fields: dict[str, Any] = {
        "proxy_key": "client-1/wx",
        "proxy_name": "wx",
        "user": "alice",
        "client_id": "client-1",
        "subdomain": "wx",
        "domains": ("hooks.example.org",),
        "locations": ("/hook", "/"),
        "http_user": "u",
        "http_password": "p",
        "request_headers_set": {"X-From": "tunnel"},
    }
    return HTTPRoute(opener=opener or unused, **{**fields, **extra})


def test_offline_store_keeps_parked_routes_private_and_in_batches(tmp_path: Path) -> None:
    """Parked routes round-trip through the file (0600, WAL files too); None deletes."""
    path = tmp_path / "state" / "offline.sqlite3"
    store = OfflineStore(path)
    policy = OfflinePolicy(200, "success", True)
    record = ParkedRecord.of("alice.wx", 1700000000.0, parked_route(), policy)
    store.save_parked({"alice.wx": record, "gone": None})
    store.close()
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    again = OfflineStore(path)
    (loaded,), bad = again.load_parked()
    assert bad == [] and loaded == record
    route = loaded.build(parked_route().opener)
    assert route.domains == ("hooks.example.org",) and route.locations == ("/hook", "/")
    assert route.http_password == "p" and dict(route.request_headers_set) == {"X-From": "tunnel"}
    again.save_parked({"alice.wx": None})
    assert again.load_parked() == ([], [])
    again.close()


def test_offline_store_reports_parked_rows_it_cannot_read(tmp_path: Path) -> None:
    """A row with a bad policy or a field this version lacks is reported, not raised."""
    store = OfflineStore(tmp_path / "offline.sqlite3")
    record = ParkedRecord.of("a", 1.0, parked_route(), OfflinePolicy(200, "", False))
    store.save_parked({"a": record})
    store._db.execute("UPDATE parked SET policy = '{\"status\": 99}'")
    assert store.load_parked()[1] == [("a", "'body'")]
    store.save_parked({"a": dataclasses.replace(record, route={**record.route, "future": 1})})
    (loaded,), _ = store.load_parked()
    with pytest.raises(ValueError, match="unknown route fields"):
        loaded.build(parked_route().opener)
    store.close()


async def test_offline_parking_restores_routes_after_a_restart(tmp_path: Path) -> None:
    """Parked before a restart: answered and stored after it; expired ones are dropped."""
    path = tmp_path / "offline.sqlite3"
    limits = OfflineLimits(max_requests=10, max_bytes=10_000, max_age=3600.0, max_total_bytes=10**6)
    first = OfflineParking(OfflineStore(path), limits)
    first.start()
    router = VhostRouter("example.test", 100)
    first.park("alice.wx", router, parked_route(), OfflinePolicy(202, "queued", True))
    old = parked_route(proxy_key="c/old", proxy_name="old", subdomain="old", domains=())
    first.park("alice.old", router, old, OfflinePolicy(200, "", False))
    first.close()
    await first.wait_closed()
    assert router.lookup("wx.example.test", "/hook") is None  # close() left the router
    stale = OfflineStore(path)
    stale._db.execute("UPDATE parked SET since = 1 WHERE proxy_key = 'alice.old'")
    stale.close()

    second = OfflineParking(OfflineStore(path), limits)
    second.start()
    fresh = VhostRouter("example.test", 100)
    assert await second.restore(fresh) == 1
    assert fresh.lookup("old.example.test", "/") is None  # older than maxAge
    route = fresh.lookup("wx.example.test", "/hook")
    assert route is not None and route.http_user == "u"
    stream = await route.opener(("203.0.113.9", 1234))
    await stream.write(REQUEST)
    assert (await stream.read(65536)).startswith(b"HTTP/1.1 202 Accepted")
    assert [r.data for r in await second.pending("alice.wx")] == [REQUEST]
    second.unpark("alice.wx")  # the client came back
    second.close()
    await second.wait_closed()
    third = OfflineStore(path)
    assert third.load_parked() == ([], [])
    third.close()


def test_offline_note_says_what_happens_with_parking_off_and_on() -> None:
    """The 502 page's note: nothing kept (404) without a policy; the bounds with capture."""
    limits = OfflineLimits(
        max_requests=100, max_bytes=8388608, max_age=86400.0, max_total_bytes=2**28
    )
    off = offline_note(None, limits)
    assert "(404)" in off and "offlineCapture" in off
    answer_only = offline_note(OfflinePolicy(200, "success", False), limits)
    assert "answers 200" in answer_only and "keeps no requests" in answer_only
    on = offline_note(OfflinePolicy(200, "success", True), limits)
    assert "stores each request (up to 100 requests, 8388608 bytes, 86400 s" in on
    assert "in order when it reconnects" in on
