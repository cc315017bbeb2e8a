"""protocol/compression.py: the Zstandard codec of compressed streams and its inflate limit."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.compression import (
    MAX_INFLATED_BYTES_PER_FRAME,
    MAX_PLAIN_BYTES_PER_PIECE,
    MAX_WINDOW_BYTES,
    WINDOW_LOG,
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
    data = bytes(10 * MAX_PLAIN_BYTES_PER_PIECE + 7)  # zeros: the best ratio there is
    inflater = Inflater()
    pieces = Deflater().compress(data)
    assert len(pieces) == 11
    sizes = [len(inflater.inflate(p)) for p in pieces]
    assert max(sizes) <= MAX_PLAIN_BYTES_PER_PIECE
    assert sum(sizes) == len(data)


def hostile(plain: bytes, window_log: int = WINDOW_LOG) -> bytes:
    """What a hostile peer sends: `plain` compressed in one go (not in pieces)."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    z = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return z.compress(plain) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


def test_compression_zip_bomb_frame_refused() -> None:
    """A frame that would inflate to 64 MiB is refused at the limit, not inflated."""
    bomb = hostile(bytes(64 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pytest.raises(CompressionError, match="MAX_INFLATED_BYTES_PER_FRAME"):
        Inflater().inflate(bomb)


def test_compression_frame_at_the_limit_passes() -> None:
    """A frame that inflates to exactly the limit is still fine."""
    frame = hostile(bytes(MAX_INFLATED_BYTES_PER_FRAME))
    assert len(Inflater().inflate(frame)) == MAX_INFLATED_BYTES_PER_FRAME


def test_compression_large_window_refused() -> None:
    """A frame that asks the decoder for a window past MAX_WINDOW_BYTES is refused."""
    assert MAX_WINDOW_BYTES < 1 << 24
    with pytest.raises(CompressionError, match="too much memory"):
        Inflater().inflate(hostile(bytes(1024), window_log=24))


def test_compression_corrupt_data_refused() -> None:
    """Bytes that are not zstd data are a CompressionError, never a zstandard traceback."""
    with pytest.raises(CompressionError, match="corrupt"):
        Inflater().inflate(b"\xff\xff\xff\xff garbage")


def test_compression_field_round_trips_in_messages() -> None:
    """new_proxy and stream_header carry the algorithm; an unknown one is a protocol error."""
    header = StreamHeader("web", "192.0.2.1", 4000, "zstd")
    assert decode_message(encode_message(header)) == header
    request = NewProxy("web", "tcp", compression="zstd")
    assert decode_message(encode_message(request)) == request
    bad = encode_message(header) | {"compression": "snappy"}
    with pytest.raises(RemoteProtocolError, match="unknown compression"):
        decode_message(bad)
