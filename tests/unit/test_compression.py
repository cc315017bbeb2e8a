"""protocol/compression.py: the deflate codec of compressed streams and its inflate limit."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.compression import (
    MAX_INFLATED_BYTES_PER_FRAME,
    MAX_PLAIN_BYTES_PER_PIECE,
    CompressionError,
    Deflater,
    Inflater,
)
from protocol.errors import RemoteProtocolError
from protocol.messages import NewProxy, StreamHeader, decode_message, encode_message

TEXT = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nAccept: text/html\r\n\r\n" * 2000


def _frames(pieces: list[bytes], frame_bytes: int) -> list[bytes]:
    """Cut each piece into DATA-frame payloads the way the mux does (never across pieces)."""
    return [p[i : i + frame_bytes] for p in pieces for i in range(0, len(p), frame_bytes)]


@given(
    writes=st.lists(st.binary(max_size=3000), max_size=30),
    frame_bytes=st.integers(min_value=1, max_value=4096),
)
@settings(max_examples=200, deadline=None)
def test_compression_round_trip_exact_for_any_writes_and_frame_cuts(
    writes: list[bytes], frame_bytes: int
) -> None:
    """Whatever the writes and however the pieces are cut into frames, the bytes come back."""
    deflater, inflater = Deflater(), Inflater()
    out = bytearray()
    sent = bytearray()
    for data in writes:
        for frame in _frames(deflater.compress(data), frame_bytes):
            out += inflater.inflate(frame)
        sent += data
        assert out == sent  # every write is whole on the far side once its frames arrive


def test_compression_each_write_is_flushed_at_once() -> None:
    """A small interactive write inflates whole from its own frames (nothing held back)."""
    deflater, inflater = Deflater(), Inflater()
    for line in (b"ls -l\n", b"whoami\n", b"x"):
        assert b"".join(inflater.inflate(p) for p in deflater.compress(line)) == line


def test_compression_shrinks_text() -> None:
    """Repetitive text crosses in a small fraction of its size."""
    pieces = Deflater().compress(TEXT)
    assert sum(map(len, pieces)) < len(TEXT) // 10


def test_compression_pieces_bound_what_one_frame_inflates() -> None:
    """A large write is cut into pieces of at most MAX_PLAIN_BYTES_PER_PIECE plain bytes."""
    data = bytes(10 * MAX_PLAIN_BYTES_PER_PIECE + 7)  # zeros: the best ratio deflate has
    inflater = Inflater()
    pieces = Deflater().compress(data)
    assert len(pieces) == 11
    sizes = [len(inflater.inflate(p)) for p in pieces]
    assert max(sizes) <= MAX_PLAIN_BYTES_PER_PIECE + 258
    assert sum(sizes) == len(data)


def test_compression_zip_bomb_frame_refused() -> None:
    """A frame that would inflate to 64 MiB is refused at the limit, not inflated."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(bytes(64 * 1024 * 1024)) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 128 * 1024
    with pytest.raises(CompressionError, match="MAX_INFLATED_BYTES_PER_FRAME"):
        Inflater().inflate(bomb)


def test_compression_frame_just_under_the_limit_passes() -> None:
    """A frame that inflates to exactly the limit is still fine."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    frame = z.compress(bytes(MAX_INFLATED_BYTES_PER_FRAME)) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(Inflater().inflate(frame)) == MAX_INFLATED_BYTES_PER_FRAME


def test_compression_corrupt_data_refused() -> None:
    """Bytes that are not deflate data are a CompressionError, never a zlib traceback."""
    with pytest.raises(CompressionError, match="corrupt"):
        Inflater().inflate(b"\xff\xff\xff\xff garbage")


def test_compression_final_block_refused() -> None:
    """A stream that ends with a final deflate block (zlib would drop what follows) is refused."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    with pytest.raises(CompressionError, match="final block"):
        Inflater().inflate(z.compress(b"hello") + z.flush())


def test_compression_field_round_trips_in_messages() -> None:
    """new_proxy and stream_header carry the algorithm; an unknown one is a protocol error."""
    header = StreamHeader("web", "192.0.2.1", 4000, "deflate")
    assert decode_message(encode_message(header)) == header
    request = NewProxy("web", "tcp", compression="deflate")
    assert decode_message(encode_message(request)) == request
    bad = encode_message(header) | {"compression": "snappy"}
    with pytest.raises(RemoteProtocolError, match="unknown compression"):
        decode_message(bad)
