"""Attacks on the inspector's capture (tunnel_client/inspect/sides.py): a head trickled in
tiny pieces must cost about its bytes, not an object per piece."""

from __future__ import annotations

import tracemalloc
from typing import Final

from tunnel_client.inspect.capture import MAX_HEAD_BYTES, HTTPCapture
from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.store import CaptureStore

PIECE_BYTES: Final = 2  # one-byte bytes objects are shared singletons; two are not
# What a head in progress may cost: its bytes, a join's copy, and some slack for the parser.
MAX_HEAD_COST_BYTES: Final = 4 * MAX_HEAD_BYTES


def test_capture_head_trickled_in_tiny_pieces_costs_about_its_bytes() -> None:
    """A request head just under the cap, fed two bytes at a time, holds at most a few times
    its size while it is in progress, and is then captured whole."""
    store = CaptureStore(max_requests=10, max_body_bytes=100)
    capture = HTTPCapture(store, "web")
    head = b"GET /t HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES - 200)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for pos in range(0, len(head), PIECE_BYTES):
            capture.feed_request(head[pos : pos + PIECE_BYTES])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= MAX_HEAD_COST_BYTES, held
    capture.feed_request(b"\r\n\r\n")
    assert capture.capturing, capture.stop_reason
    (exchange,) = store.list()
    assert isinstance(exchange, CapturedExchange)
    assert exchange.request_head == head + b"\r\n\r\n"
    assert exchange.path == "/t"


BODY_BYTES: Final = 200_000


def test_capture_body_trickled_in_tiny_pieces_costs_about_its_bytes() -> None:
    """A request body fed two bytes at a time holds at most a few times its kept bytes while
    in progress, and is captured whole."""
    store = CaptureStore(max_requests=10, max_body_bytes=2 * BODY_BYTES)
    capture = HTTPCapture(store, "web")
    capture.feed_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BODY_BYTES)
    body = bytes(range(256)) * (BODY_BYTES // 256) + b"e" * (BODY_BYTES % 256)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for pos in range(0, BODY_BYTES - PIECE_BYTES, PIECE_BYTES):
            capture.feed_request(body[pos : pos + PIECE_BYTES])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 4 * BODY_BYTES, held
    capture.feed_request(body[BODY_BYTES - PIECE_BYTES :])
    (exchange,) = store.list()
    assert exchange.request_body.data == body
