"""Offline capture on tunneld: the fallback stream, the store's bounds, delivery marking."""

import asyncio
import time
from pathlib import Path

import httptools

from tunnel_client.inspect.capture import DELIVERED_LATE_HEADER as CLIENT_HEADER
from tunnel_server.offline import (
    DELIVERED_LATE_HEADER,
    OfflineLimits,
    OfflineStore,
    StoredRequest,
)
from tunnel_server.vhost.offline import OfflineByteStream, OfflinePolicy

REQUEST = b"POST /hook HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhi"
LIMITS = OfflineLimits(max_requests=2, max_bytes=1000, max_age=60.0)


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
    """maxRequests and maxBytes refuse more; maxAge drops old ones; order is arrival order."""
    store = OfflineStore(tmp_path / "offline.sqlite3")
    now = time.time()
    assert store.add("web", b"a" * 10, LIMITS, now)
    assert store.add("web", b"b" * 10, LIMITS, now + 1)
    assert not store.add("web", b"c", LIMITS, now + 2)  # count
    assert store.add("api", b"d" * 1000, LIMITS, now)  # another proxy has its own budget
    assert not store.add("other", b"e" * 1001, LIMITS, now)  # bytes
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
