"""The decoder's read buffer: small while idle, grown only for big frames or fast reads."""

from __future__ import annotations

from protocol.frames import (
    FAST_HEADER_BYTES,
    READ_BUFFER_START_BYTES,
    Flag,
    FrameDecoder,
    FrameType,
    encode_fast,
    encode_frame,
)

KiB = 1024
MAX_PAYLOAD = 64 * KiB
READ_SIZE = 256 * KiB
MAX_CAPACITY = MAX_PAYLOAD + FAST_HEADER_BYTES + READ_SIZE


def new_decoder() -> FrameDecoder:
    return FrameDecoder(MAX_PAYLOAD, 64 * KiB, READ_SIZE)


def read(decoder: FrameDecoder, data: bytes) -> int:
    """One read the way a BufferedProtocol does it; returns the bytes taken."""
    window = decoder.get_buffer()
    n = min(len(window), len(data))
    window[:n] = data[:n]
    decoder.buffer_updated(n)
    return n


def data_frame(size: int, stream_id: int = 1) -> bytes:
    return encode_fast(FrameType.DATA, 0, stream_id, b"x" * size)


def test_frame_buffer_starts_small() -> None:
    """A new decoder holds no buffer; its first read is offered READ_BUFFER_START_BYTES, not
    a maximal frame plus a read."""
    decoder = new_decoder()
    assert decoder.capacity == 0
    assert len(decoder.get_buffer()) == READ_BUFFER_START_BYTES
    assert decoder.capacity == READ_BUFFER_START_BYTES


def test_frame_buffer_grows_to_fit_a_big_frame_then_shrinks_back() -> None:
    """A 64 KiB DATA frame grows the buffer to fit; small traffic after it shrinks it again."""
    decoder = new_decoder()
    wire = data_frame(MAX_PAYLOAD)
    frames = []
    while wire:
        taken = read(decoder, wire)
        wire = wire[taken:]
        frames += list(decoder.frames())
        assert decoder.capacity <= MAX_CAPACITY
    assert [len(f.payload) for f in frames] == [MAX_PAYLOAD]
    ping = encode_frame(FrameType.PING, int(Flag.ACK), 0, 7)
    assert read(decoder, ping) == len(ping)
    assert [f.payload for f in decoder.frames()] == [7]
    assert decoder.capacity == 0  # idle again: no buffer held


def test_frame_buffer_offers_more_while_reads_fill_it() -> None:
    """Reads that fill the offered window double the next one, up to one read size."""
    decoder = new_decoder()
    stream = data_frame(16 * KiB) * 64  # 1 MiB of back-to-back frames
    offered = []
    while stream:
        offered.append(len(decoder.get_buffer()))
        taken = read(decoder, stream)
        stream = stream[taken:]
        for _ in decoder.frames():
            pass
    assert offered[0] == READ_BUFFER_START_BYTES
    assert max(offered) >= READ_SIZE // 2  # it reached large reads
    assert decoder.capacity <= MAX_CAPACITY


def test_frame_buffer_idle_stream_of_small_frames_stays_small() -> None:
    """Many small control frames, each read on its own, never grow the buffer."""
    decoder = new_decoder()
    ping = encode_frame(FrameType.PING, 0, 0, 1)
    for _ in range(1000):
        assert read(decoder, ping) == len(ping)
        assert len(list(decoder.frames())) == 1
        assert decoder.capacity == 0  # each small read's buffer is let go once parsed
