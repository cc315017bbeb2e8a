"""The frame codec: canonical DATA/DATAGRAM headers, msgpack frames, limits and chunking."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.frames import (
    FAST_HEADER_BYTES,
    Flag,
    Frame,
    FrameDecoder,
    FrameType,
    encode_fast,
    encode_frame,
)
from tests.support.muxpair import raw_data_frame, raw_fast_frame, raw_frame

MAX_PAYLOAD = 1024
MAX_CONTROL = 1024
READ_SIZE = 256  # small, so the decoder compacts and refills its buffer often
U32_MAX = 0xFFFF_FFFF


def new_decoder(
    max_payload: int = MAX_PAYLOAD, max_control: int = MAX_CONTROL, read_size: int = READ_SIZE
) -> FrameDecoder:
    return FrameDecoder(max_payload, max_control, read_size)


def decode(
    data: bytes, pieces: list[int] | None = None, decoder: FrameDecoder | None = None
) -> list[Frame]:
    """Feed `data` cut into pieces of the given sizes (rest in one piece) and collect frames."""
    decoder = decoder or new_decoder()
    cuts: list[bytes] = []
    pos = 0
    for size in pieces or []:
        cuts.append(data[pos : pos + size])
        pos += size
    cuts.append(data[pos:])
    frames: list[Frame] = []
    for cut in cuts:
        view = memoryview(cut)
        while view:
            taken = decoder.feed(view)
            frames.extend(decoder.frames())
            if taken == 0:
                pytest.fail("the decoder stopped taking bytes without raising")
            view = view[taken:]
    frames.extend(decoder.frames())
    return frames


def encode(frame: Frame) -> bytes:
    if frame.type in (FrameType.DATA, FrameType.DATAGRAM):
        return encode_fast(frame.type, frame.flags, frame.stream_id, frame.payload)
    return encode_frame(frame.type, frame.flags, frame.stream_id, frame.payload)


ONE_OF_EACH = [
    Frame(FrameType.DATA, Flag.NONE, 1, b"hello"),
    Frame(FrameType.DATA, Flag.FIN, U32_MAX, b""),
    Frame(FrameType.DATAGRAM, Flag.NONE, 42, b"\x00\xff" * 100),
    Frame(FrameType.WINDOW_UPDATE, Flag.ACK, 2, 262_144),
    Frame(FrameType.WINDOW_UPDATE, Flag.NONE, 3, 0),
    Frame(FrameType.PING, Flag.NONE, 0, 7),
    Frame(FrameType.PING, Flag.ACK, 0, U32_MAX),
    Frame(FrameType.GO_AWAY, Flag.NONE, 0, [3, "sent past the window"]),
    Frame(FrameType.MESSAGE, Flag.NONE, 0, {"t": "close_proxy", "name": "web", "reason": "bye"}),
    Frame(FrameType.MESSAGE, Flag.SYN, 5, {"t": "stream_header", "proxy": "p", "src_port": 1}),
    Frame(FrameType.MESSAGE, Flag.RST, 6, {"t": "stream_reset", "code": 5, "reason": "full"}),
]


@pytest.mark.parametrize("frame", ONE_OF_EACH, ids=lambda f: f"{f.type.name}-{int(f.flags)}")
def test_frame_round_trips(frame: Frame) -> None:
    """Every frame type decodes to exactly the frame that was encoded."""
    assert decode(encode(frame)) == [frame]


def test_frame_types_all_covered() -> None:
    """The round-trip table holds every frame type and every flag."""
    assert {f.type for f in ONE_OF_EACH} == set(FrameType)
    assert {flag for f in ONE_OF_EACH for flag in Flag if flag and flag in f.flags} == {
        Flag.SYN,
        Flag.ACK,
        Flag.FIN,
        Flag.RST,
    }


def test_frame_wire_numbers_are_stable() -> None:
    """Frame type and flag numbers are the ones docs/protocol.md lists."""
    assert [(t.name, int(t)) for t in FrameType] == [
        ("DATA", 0),
        ("WINDOW_UPDATE", 1),
        ("PING", 2),
        ("GO_AWAY", 3),
        ("MESSAGE", 4),
        ("DATAGRAM", 5),
    ]
    assert (int(Flag.SYN), int(Flag.ACK), int(Flag.FIN), int(Flag.RST)) == (1, 2, 4, 8)


@pytest.mark.parametrize("frame_type", [FrameType.DATA, FrameType.DATAGRAM])
def test_frame_fast_header_is_13_bytes_of_msgpack(frame_type: FrameType) -> None:
    """DATA/DATAGRAM use a fixed 13-byte header that plain msgpack reads as the same array."""
    encoded = encode_fast(frame_type, Flag.FIN, 3, b"hi")
    assert FAST_HEADER_BYTES == 13
    assert len(encoded) == 13 + 2
    assert encoded[:13] == bytes.fromhex(f"94 {int(frame_type):02x} 04 ce 00000003 c6 00000002")
    assert msgpack.unpackb(encoded) == [int(frame_type), 4, 3, b"hi"]


def test_frame_fast_header_matches_hand_packed_header() -> None:
    """The encoder and an independent struct-packed header agree byte for byte."""
    for stream_id in (0, 1, 0x1234_5678, U32_MAX):
        for payload in (b"", b"x", bytes(300)):
            expected = raw_data_frame(stream_id, payload, flags=Flag.RST)
            assert encode_fast(FrameType.DATA, Flag.RST, stream_id, payload) == expected


def test_frame_fast_header_is_fixed_even_for_empty_and_small_values() -> None:
    """The fast header never shrinks to msgpack's shorter forms (uint32 and bin32 always)."""
    assert encode_fast(FrameType.DATA, 0, 0, b"") == bytes.fromhex(
        "94 00 00 ce 00000000 c6 00000000"
    )


def test_frame_non_canonical_data_is_accepted() -> None:
    """A DATA frame packed by a plain msgpack encoder (short int, bin8) decodes the same."""
    packed = raw_frame(0, int(Flag.FIN), 5, b"abc")
    assert len(packed) < FAST_HEADER_BYTES + 3  # really not the canonical form
    assert decode(packed) == [Frame(FrameType.DATA, Flag.FIN, 5, b"abc")]


def test_frame_non_canonical_data_larger_than_control_limit_is_accepted() -> None:
    """A non-canonical DATA frame may exceed the control-frame limit up to the payload limit."""
    packed = raw_frame(0, 0, 9, b"z" * 3000)
    expected = [Frame(FrameType.DATA, Flag.NONE, 9, b"z" * 3000)]
    for pieces in ([], [1] * len(packed)):
        decoder = new_decoder(max_payload=4096, max_control=256, read_size=4096)
        assert decode(packed, pieces=pieces, decoder=decoder) == expected


def test_frame_non_canonical_datagram_is_accepted() -> None:
    """A DATAGRAM frame packed by plain msgpack decodes the same."""
    assert decode(raw_frame(5, 0, 77, b"dns")) == [Frame(FrameType.DATAGRAM, Flag.NONE, 77, b"dns")]


def test_frame_payload_bytes_are_independent_of_the_read_buffer() -> None:
    """A decoded payload stays intact after the decoder reuses its buffer."""
    decoder = new_decoder()
    first = decode(encode_fast(FrameType.DATA, 0, 1, b"A" * 200), decoder=decoder)
    decode(encode_fast(FrameType.DATA, 0, 1, b"B" * 200) * 3, decoder=decoder)
    assert first[0].payload == b"A" * 200


def test_encode_frame_rejects_out_of_range_stream_id() -> None:
    """Encoding a frame for a stream id outside u32 is our own mistake."""
    with pytest.raises(LocalProtocolError):
        encode_frame(FrameType.PING, 0, U32_MAX + 1, 0)
    with pytest.raises(LocalProtocolError):
        encode_frame(FrameType.PING, 0, -1, 0)


# -- chunking ----------------------------------------------------------------------------------
_U32 = st.integers(0, U32_MAX)
_FLAGS = st.integers(0, 15).map(Flag)
_SMALL_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_MESSAGE_MAPS = st.dictionaries(st.text(max_size=8), _SMALL_VALUES, max_size=6)


def _frames() -> st.SearchStrategy[Frame]:
    def fast(kind: FrameType) -> st.SearchStrategy[Frame]:
        return st.builds(Frame, st.just(kind), _FLAGS, _U32, st.binary(max_size=80))

    def generic(kind: FrameType, payload: st.SearchStrategy[Any]) -> st.SearchStrategy[Frame]:
        return st.builds(Frame, st.just(kind), _FLAGS, _U32, payload)

    return st.one_of(
        fast(FrameType.DATA),
        fast(FrameType.DATAGRAM),
        generic(FrameType.WINDOW_UPDATE, _U32),
        generic(FrameType.PING, _U32),
        generic(FrameType.GO_AWAY, st.tuples(_U32, st.text(max_size=30)).map(list)),
        generic(FrameType.MESSAGE, _MESSAGE_MAPS),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_frames(), max_size=12), data=st.data())
def test_frame_stream_decodes_the_same_at_any_chunk_boundaries(
    frames: list[Frame], data: st.DataObject
) -> None:
    """Frames split at arbitrary boundaries, including byte by byte, decode unchanged."""
    wire = b"".join(encode(frame) for frame in frames)
    pieces = data.draw(st.lists(st.integers(1, 64), max_size=40), label="pieces")
    assert decode(wire, pieces=pieces) == frames
    assert decode(wire, pieces=[1] * len(wire)) == frames


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(_frames(), min_size=1, max_size=6), chunk=st.integers(1, 40))
def test_frame_stream_decodes_the_same_through_get_buffer(frames: list[Frame], chunk: int) -> None:
    """Writing into get_buffer() and calling buffer_updated gives the same frames."""
    wire = b"".join(encode(frame) for frame in frames)
    decoder = new_decoder()
    out: list[Frame] = []
    for pos in range(0, len(wire), chunk):
        piece = wire[pos : pos + chunk]
        buf = decoder.get_buffer()
        assert len(buf) >= len(piece)
        buf[: len(piece)] = piece
        decoder.buffer_updated(len(piece))
        out.extend(decoder.frames())
    assert out == frames


# -- limits and malformed input -------------------------------------------------------------------
def test_frame_oversize_fast_payload_is_rejected_from_its_header() -> None:
    """A canonical header announcing more than the payload limit is refused at once."""
    header = raw_data_frame(1, b"")[:9] + (MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode(header)


def test_frame_payload_at_the_limit_is_accepted() -> None:
    """A payload of exactly max_payload_bytes is fine."""
    frame = Frame(FrameType.DATA, Flag.NONE, 1, bytes(MAX_PAYLOAD))
    assert decode(encode(frame)) == [frame]


@pytest.mark.parametrize("frame_type", [0, 5])
def test_frame_oversize_non_canonical_payload_is_rejected(frame_type: int) -> None:
    """A plain-msgpack DATA/DATAGRAM with a payload over the limit is refused."""
    with pytest.raises(RemoteProtocolError):
        decode(raw_frame(frame_type, 0, 1, bytes(MAX_PAYLOAD + 1)))


def test_frame_oversize_control_string_is_rejected() -> None:
    """A control frame with a string longer than the control limit is refused."""
    packed = raw_frame(4, 0, 0, {"t": "close_proxy", "reason": "r" * (MAX_CONTROL + 10)})
    with pytest.raises(RemoteProtocolError):
        decode(packed)


def _control_frame_of_small_strings(total_bytes: int) -> bytes:
    """A MESSAGE frame of about `total_bytes` built from many short strings."""
    entries = {f"k{i:03d}": "v" * 20 for i in range(total_bytes // 26 + 1)}
    return raw_frame(4, 0, 0, entries)


@pytest.mark.parametrize("chunk", [1, 64, 255])
def test_frame_oversize_control_frame_in_chunks_is_rejected(chunk: int) -> None:
    """A control frame over the limit arriving in pieces is refused."""
    decoder = new_decoder(max_payload=4096, max_control=256, read_size=512)
    packed = _control_frame_of_small_strings(600)
    with pytest.raises(RemoteProtocolError, match="larger than the limit"):
        decode(packed, pieces=[chunk] * (len(packed) // chunk), decoder=decoder)


def test_frame_oversize_control_frame_in_one_read_is_rejected() -> None:
    """A control frame over the limit is refused even when it arrives in one read."""
    decoder = new_decoder(max_payload=4096, max_control=256, read_size=4096)
    packed = _control_frame_of_small_strings(600)
    assert len(packed) > 256
    with pytest.raises(RemoteProtocolError):
        decode(packed, decoder=decoder)


def test_frame_oversize_non_binary_data_frame_is_rejected() -> None:
    """A DATA-typed frame whose payload is not binary and exceeds every limit is refused."""
    packed = raw_frame(0, 0, 1, ["a" * 1000] * 60)  # 60 KB, payload limit 1 KiB
    with pytest.raises(RemoteProtocolError):
        decode(packed, pieces=[512] * (len(packed) // 512))


BAD_FRAMES = {
    "not an array": msgpack.packb({"type": 0}),
    "array of 3": msgpack.packb([1, 0, 1]),
    "array of 5": msgpack.packb([1, 0, 1, 5, 0]),
    "unknown type": raw_frame(9, 0, 1, 5),
    "type as string": raw_frame("1", 0, 1, 5),  # type: ignore[arg-type]
    "type as bool": raw_frame(True, 0, 1, 5),
    "unknown flag": raw_frame(1, 0x10, 1, 5),
    "negative flags": raw_frame(1, -1, 1, 5),
    "flags as string": raw_frame(1, "", 1, 5),  # type: ignore[arg-type]
    "unknown flag in fast header": raw_fast_frame(0, 0x40, 1, b"x"),
    "high bit flag in fast header": raw_fast_frame(5, 0x80, 1, b"x"),
    "negative stream id": raw_frame(1, 0, -1, 5),
    "stream id over u32": raw_frame(1, 0, U32_MAX + 1, 5),
    "stream id as string": raw_frame(1, 0, "1", 5),  # type: ignore[arg-type]
    "data payload as string": raw_frame(0, 0, 1, "text"),
    "data payload as int": raw_frame(0, 0, 1, 5),
    "datagram payload as list": raw_frame(5, 0, 1, [b"x"]),
    "window update as string": raw_frame(1, 0, 1, "5"),
    "window update negative": raw_frame(1, 0, 1, -5),
    "window update over u32": raw_frame(1, 0, 1, U32_MAX + 1),
    "window update as bool": raw_frame(1, 0, 1, True),
    "ping as bytes": raw_frame(2, 0, 0, b"\x01"),
    "go away as int": raw_frame(3, 0, 0, 1),
    "go away too short": raw_frame(3, 0, 0, [1]),
    "go away code as string": raw_frame(3, 0, 0, ["1", "x"]),
    "go away reason as int": raw_frame(3, 0, 0, [1, 2]),
    "message as list": raw_frame(4, 0, 0, ["t", "hello"]),
    "message with int keys": raw_frame(4, 0, 0, {1: "x"}),
    "invalid utf-8": bytes.fromhex("94 04 00 00 81 a1 74 a2 ff fe"),
    "reserved msgpack byte": b"\xc1",
    "ext type": bytes.fromhex("94 d4 00 00 00 00 00"),
}


@pytest.mark.parametrize("wire", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_frame_malformed_is_remote_protocol_error(wire: bytes) -> None:
    """Bad type, flags, stream id, payload type or msgpack is the peer's protocol error."""
    with pytest.raises(RemoteProtocolError):
        decode(wire + raw_frame(2, 0, 0, 1))  # a trailing PING so short frames complete


def test_frame_error_does_not_depend_on_chunking() -> None:
    """A malformed frame fed byte by byte fails the same way."""
    with pytest.raises(RemoteProtocolError):
        decode(raw_frame(9, 0, 1, 5), pieces=[1] * 8)
