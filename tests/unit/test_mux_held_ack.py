"""A held ACK (accept_stream(hold_ack=True)): it leaves with the stream's first frame."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.events import (
    DataReceived,
    SendWindowOpened,
    StreamAccepted,
    StreamClosed,
    StreamEnded,
    StreamReset,
)
from protocol.frames import Flag, FrameType
from protocol.messages import StreamHeader
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES
from tests.support.muxpair import MuxPair

HEADER = StreamHeader("echo", "203.0.113.9", 40000)


def opened_and_held(pair: MuxPair) -> int:
    """The client opens a stream with 1 byte; the server accepts it holding the ACK."""
    stream_id = pair.client.open_stream(HEADER)
    pair.client.send_data(stream_id, b"x")
    pair.pump()
    pair.take("server")
    pair.server.accept_stream(stream_id, hold_ack=True)
    return stream_id


def frames(out: list[bytes]) -> list[tuple[int, int, int]]:
    """(type, flags, stream id) of each frame in one output, in order."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(b"".join(out))
    return [(f[0], f[1], f[2]) for f in unpacker]


def test_mux_held_ack_writes_nothing_at_accept() -> None:
    """Accepting with the ACK held queues no frame and leaves the opener waiting."""
    pair = MuxPair()
    opened_and_held(pair)
    assert pair.server.pending_output_bytes == 0
    assert pair.server.owed_acks == 1
    pair.pump()
    assert pair.of_type("client", StreamAccepted) == []


def test_mux_held_ack_rides_in_front_of_the_first_data() -> None:
    """The first DATA is preceded by the ACK in the same output; the opener sees accept first."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.server.send_data(stream_id, b"x")
    out = pair.server.data_to_send()
    assert frames(out) == [
        (FrameType.WINDOW_UPDATE, Flag.ACK, stream_id),
        (FrameType.DATA, Flag.NONE, stream_id),
    ]
    pair.deliver("client", b"".join(out))
    events = pair.take("client")
    assert events[0] == StreamAccepted(stream_id)
    assert events[-1] == DataReceived(stream_id, b"x")
    assert pair.server.owed_acks == 0


def test_mux_held_ack_rides_in_front_of_fin() -> None:
    """A service that closes without a byte: ACK then FIN, and the stream closes cleanly."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.client.end_stream(stream_id)
    pair.pump()
    pair.server.end_stream(stream_id)
    out = pair.server.data_to_send()
    assert frames(out) == [
        (FrameType.WINDOW_UPDATE, Flag.ACK, stream_id),
        (FrameType.DATA, Flag.FIN, stream_id),
    ]
    pair.deliver("client", b"".join(out))
    events = pair.take("client")
    assert events[0] == StreamAccepted(stream_id)
    assert StreamClosed(stream_id) in events


def test_mux_held_ack_then_reset_is_accept_then_reset() -> None:
    """A reset with the ACK still held sends ACK then RST, as an unheld accept would."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.server.reset_stream(stream_id, ErrorCode.CANCELLED, "service went away")
    pair.pump()
    events = [e for e in pair.take("client") if not isinstance(e, SendWindowOpened)]
    assert events[0] == StreamAccepted(stream_id)
    assert isinstance(events[1], StreamReset) and events[1].reason == "service went away"
    assert pair.server.owed_acks == 0


def test_mux_held_ack_leaves_with_send_owed_acks() -> None:
    """send_owed_acks writes every held ACK, with the credit an unheld accept grants."""
    pair = MuxPair()
    first = opened_and_held(pair)
    second = opened_and_held(pair)
    pair.server.send_owed_acks()
    out = pair.server.data_to_send()
    assert frames(out) == [
        (FrameType.WINDOW_UPDATE, Flag.ACK, first),
        (FrameType.WINDOW_UPDATE, Flag.ACK, second),
    ]
    pair.deliver("client", b"".join(out))
    assert pair.of_type("client", StreamAccepted) == [
        StreamAccepted(first),
        StreamAccepted(second),
    ]
    assert pair.client.send_window(first) > INITIAL_STREAM_WINDOW_BYTES
    pair.server.send_owed_acks()
    assert pair.server.pending_output_bytes == 0  # each ACK leaves once


def test_mux_held_ack_credit_waits_until_the_initial_window_runs_low() -> None:
    """Consumed bytes grant nothing while the peer has half its initial window left; past
    that the ACK leaves, crediting what was consumed, so an uploading opener never stalls."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.server.acknowledge_data(stream_id, 1)
    assert pair.server.pending_output_bytes == 0
    half = INITIAL_STREAM_WINDOW_BYTES // 2
    assert pair.client.send_data(stream_id, b"u" * half) == half
    out = pair.client.data_to_send()
    pair.deliver("server", b"".join(out))  # the opener is now under half its window
    out = pair.server.data_to_send()
    assert frames(out) == [(FrameType.WINDOW_UPDATE, Flag.ACK, stream_id)]  # before consuming
    pair.deliver("client", b"".join(out))
    pair.server.acknowledge_data(stream_id, half)
    pair.pump()
    assert pair.client.send_window(stream_id) >= INITIAL_STREAM_WINDOW_BYTES


def test_mux_held_ack_forgotten_when_the_opener_resets() -> None:
    """The opener's RST ends a stream whose ACK is held: nothing is owed any more."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.client.reset_stream(stream_id, ErrorCode.CANCELLED, "visitor left")
    pair.pump()
    assert pair.server.owed_acks == 0
    pair.server.send_owed_acks()
    assert pair.server.pending_output_bytes == 0


def test_mux_held_ack_only_for_a_stream_waiting_to_be_accepted() -> None:
    """Holding the ACK of a stream already accepted is a local error, like a second accept."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    with pytest.raises(LocalProtocolError, match="not waiting"):
        pair.server.accept_stream(stream_id, hold_ack=True)


COMMANDS = st.lists(
    st.sampled_from(["send", "big", "ack", "end", "reset", "flush", "peer_end", "peer_send"]),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(commands=COMMANDS)
def test_mux_held_ack_any_order_of_commands_stays_valid(commands: list[str]) -> None:
    """Any order of the acceptor's commands after a held accept: no protocol error on either
    side, the opener hears StreamAccepted before any data, and nothing stays owed."""
    pair = MuxPair()
    stream_id = opened_and_held(pair)
    pair.take("client")
    for command in commands:
        server, client = pair.server, pair.client
        if not server.has_stream(stream_id):
            break
        try:
            if command == "send":
                server.send_data(stream_id, b"y")
            elif command == "big":
                server.send_data(stream_id, b"z" * 70_000)
            elif command == "ack":
                events = pair.of_type("server", DataReceived)
                got = sum(len(e.data) for e in events)
                pair.take("server")
                server.acknowledge_data(stream_id, got)
            elif command == "end":
                server.end_stream(stream_id)
            elif command == "reset":
                server.reset_stream(stream_id, ErrorCode.CANCELLED, "fuzz")
            elif command == "flush":
                server.send_owed_acks()
            elif command == "peer_end" and client.has_stream(stream_id):
                client.end_stream(stream_id)
            elif command == "peer_send" and client.has_stream(stream_id):
                client.send_data(stream_id, b"p" * 1000)
        except LocalProtocolError:
            pass  # a command the state forbids (e.g. a second FIN) is refused locally
        pair.pump()
    assert not pair.client.terminated and not pair.server.terminated
    seen = [e for e in pair.events("client") if getattr(e, "stream_id", None) == stream_id]
    first_data = [i for i, e in enumerate(seen) if isinstance(e, DataReceived | StreamEnded)]
    if first_data:
        assert StreamAccepted(stream_id) in seen[: first_data[0]]
    pair.server.send_owed_acks()
    assert pair.server.owed_acks == 0
