"""Unit tests: every non-body byte of a request is bounded, and a broken request is taken
back before the app sees it (#8)."""

from __future__ import annotations

import pytest

from tests.unit.test_vhost_parsing import read_items
from tunnel_server.vhost.inbound import (
    FEED_SLICE_BYTES,
    ITEM_OVERHEAD_BYTES,
    QUEUE_HIGH_BYTES,
    InboundProtocol,
)
from tunnel_server.vhost.request import ParseFailure, RequestHead, RequestReader

LIMIT = 1024
CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def feed_until_failure(prefix: bytes, piece: bytes, max_pieces: int) -> tuple[int, object]:
    """Feed `prefix`, then `piece` repeatedly, until the reader queues a ParseFailure."""
    conn = InboundProtocol(lambda c: None)
    reader = RequestReader(conn, LIMIT)
    conn.feeder = reader.feed
    conn.data_received(prefix)
    for count in range(1, max_pieces + 1):
        conn.data_received(piece)
        failure = [item for item in list(conn._items) if isinstance(item, ParseFailure)]
        if failure:
            return count * len(piece), failure[0]
        while conn.queued_bytes > 0 and conn.pop() is not None:
            pass  # the consumer keeps up: only the parser could be buffering
    raise AssertionError("the endless line was never cut off")


@pytest.mark.parametrize(
    ("prefix", "status"),
    [
        (CHUNKED + b"0\r\nX-Trailer: ", 400),
        (CHUNKED + b"3\r\nabc\r\n0\r\n", 400),  # trailer names without end
        (CHUNKED + b"1;ext=", 400),
        (CHUNKED + b"00000", 400),
        (b"GET / HTTP/1.1\r\nX-Head: ", 431),
    ],
)
@pytest.mark.parametrize("piece", [b"a", b"a" * 100, b"a" * 5000])
def test_bounds_endless_line_cut_off(prefix: bytes, status: int, piece: bytes) -> None:
    """An endless trailer, chunk extension, chunk size or header is refused within the limit
    plus one read, however it is split."""
    if prefix.endswith(b"00000"):
        piece = b"0" * len(piece)
    sent, failure = feed_until_failure(prefix, piece, 100_000)
    assert isinstance(failure, ParseFailure) and failure.status == status
    assert sent <= LIMIT + 2 * len(piece)


def test_bounds_many_small_trailers_count_together() -> None:
    """Trailers in total count against the limit, like a head."""
    trailers = b"".join(b"T%d: x\r\n" % i for i in range(400))
    items = read_items(CHUNKED + b"0\r\n" + trailers + b"\r\n", max_header_bytes=LIMIT)
    assert isinstance(items[-1], ParseFailure) and items[-1].status == 400


def test_bounds_big_body_in_small_chunks_is_fine() -> None:
    """Chunk-size lines are overhead between progress, not a total: a long body of 1-byte
    chunks passes."""
    body = b"1\r\nx\r\n" * 2000 + b"0\r\n\r\n"
    items = read_items(CHUNKED, body, max_header_bytes=LIMIT)
    assert not any(isinstance(item, ParseFailure) for item in items)
    assert b"".join(item for item in items if isinstance(item, bytes)) == b"x" * 2000


def test_bounds_broken_request_is_taken_back() -> None:
    """A request that breaks in the same read as its head never queues the head: the app
    gets nothing, the visitor gets the 400."""
    items = read_items(CHUNKED + b"3\r\nabc\r\nzz\r\n")
    assert len(items) == 1 and isinstance(items[0], ParseFailure) and items[0].status == 400
    good = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    items = read_items(good + CHUNKED + b"zz\r\n")
    assert isinstance(items[0], RequestHead) and items[0].target == b"/1"
    assert isinstance(items[-1], ParseFailure) and len(items) == 3  # head, end, failure


class _Transport:
    """Enough of a transport for InboundProtocol to pause and resume reading."""

    def __init__(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_bounds_body_tail_then_pipelined_flood_is_one_body_item_then_sliced() -> None:
    """A read that holds the rest of a Content-Length body and then thousands of tiny requests:
    the body queues as one item, the requests after it are fed in slices only until the queue
    is over its budget, and the rest of the read is held unparsed."""
    body_bytes, requests = 200_000, 5_000
    transport = _Transport()
    conn = InboundProtocol(lambda c: None)
    conn.transport = transport  # type: ignore[assignment]
    reader = RequestReader(conn, LIMIT)
    conn.feeder = reader.feed
    conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % body_bytes)
    assert conn.body_bytes_left == body_bytes
    flood = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(requests))
    conn.data_received(bytes(body_bytes) + flood)
    items = list(conn._items)
    assert [len(item) for item in items if isinstance(item, bytes)] == [body_bytes]
    assert conn.body_bytes_left == 0
    heads = sum(isinstance(item, RequestHead) for item in items)
    assert 0 < heads < requests  # sliced: not the whole flood parsed at once
    smallest = len(b"GET /0 HTTP/1.1\r\nHost: a\r\n\r\n")
    one_slice = (FEED_SLICE_BYTES // smallest + 1) * (smallest + 64 + 2 * ITEM_OVERHEAD_BYTES)
    assert conn.queued_bytes <= QUEUE_HIGH_BYTES + one_slice
    assert transport.paused and conn._held  # the rest waits, unparsed
