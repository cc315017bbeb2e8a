"""docs/protocol.md 3.2: a held ACK MUST leave once the opener has less than half of the
initial window left, even before the application consumes anything (the ACK carries credit
up to the stream's target window, so holding it would stall the opener for ACK_DELAY_S)."""

from __future__ import annotations

from protocol.events import SendWindowOpened, StreamAccepted
from protocol.messages import StreamHeader
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES
from tests.support.muxpair import MuxPair

HEADER = StreamHeader("echo", "203.0.113.9", 40000)
HALF = INITIAL_STREAM_WINDOW_BYTES // 2


def test_mux_held_ack_low_window_not_held_when_already_low_at_accept() -> None:
    """Accepting with hold_ack after the opener used over half its window sends the ACK now."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.client.send_data(stream_id, b"x" * (HALF + 1))
    pair.pump()
    pair.take("server")
    pair.server.accept_stream(stream_id, hold_ack=True)
    assert pair.server.owed_acks == 0
    pair.pump()
    assert len(pair.of_type("client", StreamAccepted)) == 1
    assert pair.client.send_window(stream_id) > INITIAL_STREAM_WINDOW_BYTES - HALF - 1


def test_mux_held_ack_low_window_leaves_when_data_crosses_half() -> None:
    """A held ACK leaves, with credit, when arriving data leaves the opener under half."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.client.send_data(stream_id, b"x")
    pair.pump()
    pair.take("server")
    pair.server.accept_stream(stream_id, hold_ack=True)
    pair.client.send_data(stream_id, b"x" * (HALF - 1))
    pair.pump()
    assert pair.server.owed_acks == 1  # exactly half left: may still hold
    pair.client.send_data(stream_id, b"x")
    pair.pump()
    assert pair.server.owed_acks == 0
    assert len(pair.of_type("client", StreamAccepted)) == 1
    opened = pair.of_type("client", SendWindowOpened)
    assert opened and opened[-1].window > INITIAL_STREAM_WINDOW_BYTES - HALF - 1
