"""Fuzz the frame decoder and the sans-IO session it feeds, with what an unauthenticated peer
can send: random bytes, valid frames with bytes flipped, any chunking. Nothing but
RemoteProtocolError may come out, nothing may hang, and the buffer stays within its bound."""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteProtocolError
from protocol.events import ConnectionTerminated
from protocol.frames import FrameDecoder, FrameType, encode_frame
from protocol.messages import Challenge, Login, encode_message
from protocol.mux import MuxConnection, Role
from tests.fuzz.budget import FUZZ_SETTINGS, count_example
from tunnel_server.session import PRE_LOGIN_MAX_FRAME_BYTES

MAX_PAYLOAD: Final = 64 * 1024
READ_SIZE: Final = 4096
# What the decoder may hold: one maximal frame plus one read (frames.py states the bound).
BUFFER_BOUND: Final = MAX_PAYLOAD + 13 + READ_SIZE

VALID_FRAMES: Final = [
    encode_frame(FrameType.MESSAGE, 0, 0, encode_message(Challenge(2, "0.1.0", bytes(32)))),
    encode_frame(
        FrameType.MESSAGE, 0, 0, encode_message(Login(2, "0.1.0", "id", "", "h", bytes(32)))
    ),
    encode_frame(FrameType.PING, 0, 0, 7),
    encode_frame(FrameType.WINDOW_UPDATE, 0, 1, 1024),
    encode_frame(FrameType.GO_AWAY, 0, 0, [0, "bye"]),
    encode_frame(FrameType.DATA, 1, 1, b"hello"),
    encode_frame(FrameType.DATAGRAM, 0, 3, b"\x00\x01"),
    encode_frame(FrameType.DATAGRAM, 0, 0, b"\x00\x00\x10\x00"),  # a datagram credit
    encode_frame(FrameType.DATAGRAM, 2, 0, b"\x00\x00\x10\x00"),  # a credit: "I unpack"
    encode_frame(FrameType.DATAGRAM, 1, 3, b"\x00\x02hi\x00\x00\x00\x01!"),  # a pack of 3
]


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """Valid frames, random bytes and byte flips, concatenated."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["frame", "random", "flipped"]))
        if kind == "random":
            parts.append(draw(st.binary(max_size=300)))
            continue
        frame = bytearray(draw(st.sampled_from(VALID_FRAMES)))
        if kind == "flipped":
            for _ in range(draw(st.integers(1, 4))):
                index = draw(st.integers(0, len(frame) - 1))
                frame[index] = draw(st.integers(0, 255))
        parts.append(bytes(frame))
    return b"".join(parts)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, offset = [], 0
    for size in sizes:
        if offset >= len(data):
            break
        out.append(data[offset : offset + size])
        offset += size
    if offset < len(data):
        out.append(data[offset:])
    return out


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(hostile_streams(), st.lists(st.integers(1, 64), max_size=40))
def test_fuzz_frame_decoder_only_raises_protocol_errors(data: bytes, sizes: list[int]) -> None:
    """Any byte stream, in any chunking, gives frames or RemoteProtocolError, never another
    exception, and the decoder never holds more than its bound."""
    count_example("frame-decoder")
    check_frame_decoder(data, sizes)


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(hostile_streams(), st.lists(st.integers(1, 512), max_size=20))
def test_fuzz_prelogin_session_never_raises(data: bytes, sizes: list[int]) -> None:
    """A server-side session under the pre-login limits absorbs any input: no exception
    escapes, and a violation ends it with ConnectionTerminated."""
    count_example("prelogin-session")
    check_prelogin_session(data, sizes)


def check_frame_decoder(data: bytes, sizes: list[int]) -> None:
    """The decoder property (see test_fuzz_frame_decoder_only_raises_protocol_errors)."""
    decoder = FrameDecoder(MAX_PAYLOAD, PRE_LOGIN_MAX_FRAME_BYTES, READ_SIZE)
    try:
        for chunk in chunks(data, sizes):
            view = memoryview(chunk)
            while view:
                taken = decoder.feed(view)
                view = view[taken:]
                for frame in decoder.frames():
                    assert isinstance(frame.type, FrameType)
                assert decoder._end - decoder._start <= BUFFER_BOUND
    except RemoteProtocolError:
        pass  # the peer broke the protocol: the session ends with GO_AWAY


def check_prelogin_session(data: bytes, sizes: list[int]) -> None:
    """The session property (see test_fuzz_prelogin_session_never_raises)."""
    mux = MuxConnection(Role.SERVER, now=0.0)
    mux.set_control_limit(PRE_LOGIN_MAX_FRAME_BYTES)
    for chunk in chunks(data, sizes):
        view = memoryview(chunk)
        while view and not mux.terminated:
            buf = mux.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            mux.buffer_updated(n)
            view = view[n:]
            while (event := mux.next_event()) is not None:
                if isinstance(event, ConnectionTerminated):
                    assert mux.terminated
        mux.data_to_send()
