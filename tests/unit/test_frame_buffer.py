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


def shared_decoder() -> FrameDecoder:
    return FrameDecoder(MAX_PAYLOAD, 64 * KiB, READ_SIZE, shared_reads=True)


def test_frame_buffer_shared_reads_hold_no_buffer_between_small_reads() -> None:
    """With shared reads, small messages read one at a time never allocate a buffer of the
    decoder's own, and every frame comes out."""
    decoder = shared_decoder()
    for i in range(500):
        frame = data_frame(100 + i % 7, stream_id=i + 1)
        assert read(decoder, frame) == len(frame)
        frames = list(decoder.frames())
        decoder.keep_unparsed()
        assert [(f.stream_id, len(f.payload)) for f in frames] == [(i + 1, 100 + i % 7)]
        assert decoder.capacity == 0


def test_frame_buffer_shared_reads_keep_a_partial_frame_from_other_decoders() -> None:
    """A partial frame left by a shared read is the decoder's own after keep_unparsed: other
    decoders' reads into the same scratch buffer do not touch it."""
    first, other = shared_decoder(), shared_decoder()
    wire = encode_fast(FrameType.DATA, 0, 7, bytes(range(200)))
    assert read(first, wire[:120]) == 120
    assert list(first.frames()) == []
    first.keep_unparsed()
    assert first.capacity > 0  # the partial frame moved into a buffer of its own
    for _ in range(3):  # other sessions' reads overwrite the scratch
        noise = data_frame(3000, stream_id=9)
        assert read(other, noise) == len(noise)
        assert [len(f.payload) for f in other.frames()] == [3000]
        other.keep_unparsed()
    assert read(first, wire[120:]) == len(wire) - 120
    frames = list(first.frames())
    first.keep_unparsed()
    assert [(f.stream_id, f.payload) for f in frames] == [(7, bytes(range(200)))]


def test_frame_buffer_shared_reads_keep_frames_left_unparsed() -> None:
    """Whole frames the owner did not take from a shared read (its event queue was full) are
    still there, in order, after another decoder's read."""
    first, other = shared_decoder(), shared_decoder()
    wire = b"".join(data_frame(10, stream_id=i + 1) for i in range(50))
    assert read(first, wire) == len(wire)
    taken = []
    for frame in first.frames():
        taken.append(frame.stream_id)
        if len(taken) == 5:
            break  # the owner stops here, as the mux does when its event queue is full
    first.keep_unparsed()
    noise = data_frame(2000, stream_id=99)
    assert read(other, noise) == len(noise)
    assert [f.stream_id for f in other.frames()] == [99]
    other.keep_unparsed()
    taken += [f.stream_id for f in first.frames()]
    first.keep_unparsed()
    assert taken == list(range(1, 51))


def test_frame_buffer_shared_reads_grow_an_own_buffer_for_bulk() -> None:
    """Reads that fill the scratch window move a shared decoder to a growing buffer of its
    own, as without shared reads."""
    decoder = shared_decoder()
    stream = data_frame(16 * KiB) * 16
    offered = []
    got = 0
    while stream:
        offered.append(len(decoder.get_buffer()))
        taken = read(decoder, stream)
        stream = stream[taken:]
        got += sum(len(f.payload) for f in decoder.frames())
        decoder.keep_unparsed()
        assert decoder.capacity <= MAX_CAPACITY
    assert got == 16 * 16 * KiB
    assert offered[0] == READ_BUFFER_START_BYTES
    assert max(offered) > READ_BUFFER_START_BYTES
